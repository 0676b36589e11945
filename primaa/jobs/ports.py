"""What the job manager needs from the outside, as protocols; backends are chosen in app.py."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from primaa.plugins.algorithm import AlgorithmResult


class WorkerLost(Exception):
    """A worker process died and nobody can tell which job killed it; retry, counted."""


class WorkerCrashed(WorkerLost):
    """This job's own worker died (segfault, ``os._exit``, SIGKILL): fail it, do not retry.

    Retrying an algorithm that crashes its process would only crash the pool again,
    and take the jobs running beside it down each time.
    """


class JobInterrupted(WorkerLost):
    """Another job's worker died and took this one's pool down: re-run it, uncounted."""


class OutOfMemory(Exception):
    """The algorithm hit the worker's memory limit (a ``MemoryError`` in the worker)."""

    def __init__(self, limit_mb: int) -> None:
        limit = f" (worker limit {limit_mb} MB)" if limit_mb else ""
        super().__init__(f"the algorithm ran out of memory{limit}")


class CpuExecutor(Protocol):
    """Runs CPU-bound algorithms away from the event loop (a process pool).

    ``run`` raises :class:`WorkerCrashed`, :class:`JobInterrupted` or
    :class:`WorkerLost` when a worker dies, :class:`OutOfMemory`, and
    ``JobCancelled`` when the job was stopped by :meth:`cancel`.
    """

    async def run(
        self, job_id: str, algorithm: str, image_path: Path, parameters: Mapping[str, Any]
    ) -> AlgorithmResult: ...

    def cancel(self, job_id: str) -> None:
        """Stop the job: at its next progress report, or by killing its worker after a grace."""

    def forget(self, job_id: str) -> None:
        """Drop any cancellation left from an earlier run of the job."""

    def on_progress(self, sink: Callable[[str, float], None]) -> None: ...


class ImageSource(Protocol):
    async def fetch(self, url: str, job_id: str) -> Path:
        """Download the image to a spool file; raise an error whose message names the cause."""


class Notifier(Protocol):
    def wake(self) -> None:
        """A delivery was queued: send it soon."""
