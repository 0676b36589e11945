"""How many jobs of each kind a dispatcher holds at once, and so what it claims.

A job held but not started waits in this process: if the process dies, it waits
again for its lease to expire, then behind the jobs another replica already holds.
Claimed whatever their kind, up to ``2 * cpu_slots + io_slots`` jobs, a replica
with one worker held 18 CPU-bound jobs it could not start for seconds; killed -9,
they finished 17.5 s after the kill (``bench/replicas.py``). So CPU-bound jobs are
claimed only up to what the worker slots start soon, the others up to the
event loop's slots.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

from primaa.jobs.storage import AlgorithmFilter
from primaa.plugins.algorithm import AnyAlgorithm, AsyncAlgorithm


@dataclasses.dataclass(frozen=True, slots=True)
class ClaimPlan:
    #: The algorithms that run in worker processes; any other runs on the event loop,
    #: or fails at once when this process does not know it.
    cpu_algorithms: frozenset[str]
    #: CPU-bound jobs held at once: running, fetching their image or waiting for a slot.
    cpu_capacity: int
    #: Other jobs held at once.
    other_capacity: int

    @classmethod
    def of(
        cls, algorithms: Mapping[str, AnyAlgorithm], *, cpu_slots: int, io_slots: int
    ) -> ClaimPlan:
        """Twice the worker slots for CPU-bound jobs, so the next ones fetch their
        images while others run; the event loop's slots for the others."""
        cpu = frozenset(
            name
            for name, algorithm in algorithms.items()
            if not isinstance(algorithm, AsyncAlgorithm)
        )
        return cls(cpu_algorithms=cpu, cpu_capacity=2 * cpu_slots, other_capacity=io_slots)

    def claims(self, held: Iterable[str]) -> list[tuple[AlgorithmFilter, int]]:
        """The claims to make now, given the algorithms of the jobs held: each kind's
        filter and its free room (none for a kind without room)."""
        held_cpu = held_other = 0
        for algorithm in held:
            if algorithm in self.cpu_algorithms:
                held_cpu += 1
            else:
                held_other += 1
        claims = []
        if self.cpu_algorithms and (room := self.cpu_capacity - held_cpu) > 0:
            claims.append((AlgorithmFilter(self.cpu_algorithms), room))
        if (room := self.other_capacity - held_other) > 0:
            claims.append((AlgorithmFilter(self.cpu_algorithms, excluding=True), room))
        return claims
