"""What the jobs core needs from storage, and nothing more: a port that the stores in
``primaa.store`` implement (they import it; it imports none of them).

Every state change is a compare-and-set on the job's current status, so two
actors (two dispatchers, a dispatcher and a cancel request) can never both
finish a job. Running jobs are held under a lease: a dispatcher that stops
renewing loses them, and :meth:`JobStore.requeue_expired` hands them back.
"""

from __future__ import annotations

import builtins
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from primaa.jobs.model import (
    Delivery,
    DeliveryAttempt,
    DeliveryRecord,
    DeliveryStatus,
    Job,
    JobState,
    JobStatus,
)


@dataclasses.dataclass(frozen=True, slots=True)
class JobPage:
    jobs: Sequence[Job]
    #: Opaque cursor for the next page; ``None`` on the last page.
    next_cursor: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class Requeued:
    """What :meth:`JobStore.requeue_expired` did."""

    #: Jobs put back to Pending for another attempt.
    retried: Sequence[str]
    #: Jobs that had used all their attempts and were failed instead.
    failed: Sequence[Job]
    #: Jobs a client had asked to cancel: they are cancelled, not retried.
    cancelled: Sequence[Job] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class Deleted:
    """What :meth:`JobStore.delete` removed along with the job."""

    #: The stored result (a Feature, or the reference to its file), ``None`` without one.
    result: Mapping[str, Any] | None


@dataclasses.dataclass(frozen=True, slots=True)
class AlgorithmFilter:
    """Which Pending jobs a claim may take, by algorithm: those named, or with
    ``excluding`` every other one (known or not: a dispatcher's claim of all but its
    CPU-bound algorithms also takes the jobs it will fail as unknown)."""

    names: frozenset[str]
    excluding: bool = False

    def admits(self, algorithm: str) -> bool:
        return (algorithm in self.names) != self.excluding


class StaleJob(Exception):
    """The job was not in the expected state: someone else moved it first."""


class LostClaim(KeyError):
    """The delivery's claim is no longer this process's: its attempt is not recorded."""


class JobStore(Protocol):
    #: True when one service process owns the store (SQLite file, memory): at
    #: start-up every Running job is an orphan of a previous run and can be requeued
    #: without waiting for its lease to expire.
    exclusive: bool

    async def open(self) -> None:
        """Connect and bring the schema up to date."""

    async def close(self) -> None: ...

    async def check_writable(self) -> None:
        """Raise :class:`~primaa.jobs.errors.StorageUnavailable` when a write would be
        refused now (a full disk, a read-only database); every write method raises it too."""

    async def create(self, job: Job) -> None:
        """Store a new job (status Pending); ``ValueError`` if its id is taken."""

    async def get(self, job_id: str) -> Job | None: ...

    async def get_with_deliveries(
        self, job_id: str
    ) -> tuple[Job, builtins.list[DeliveryRecord]] | None:
        """The job and the records of :meth:`deliveries_for` it, in that order, in one read
        (``GET /jobs/{id}``)."""

    async def state(self, job_id: str) -> JobState | None:
        """The job's status, error and client_id, without reading the rest of it."""

    async def list(
        self,
        *,
        status: JobStatus | None = None,
        algorithm: str | None = None,
        client_id: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> JobPage:
        """Newest first. ``client_id`` restricts to one API key's jobs.

        A malformed ``cursor`` or a ``limit`` outside 1..1000 raises ``ValueError``.
        """

    async def claim(
        self,
        *,
        lease_owner: str,
        lease_seconds: float,
        limit: int,
        now: float,
        algorithms: AlgorithmFilter | None = None,
    ) -> builtins.list[Job]:
        """Move up to ``limit`` of the oldest Pending jobs to Running, leased to ``lease_owner``.

        With ``algorithms``, only jobs it admits, still oldest first; the SQL stores
        read at most ``limit`` jobs of each admitted algorithm from an index, however
        many Pending jobs of the others wait.
        """

    async def renew(
        self, job_ids: Sequence[str], *, lease_owner: str, lease_seconds: float, now: float
    ) -> None:
        """Extend the leases ``lease_owner`` holds on these Running jobs."""

    async def requeue_expired(
        self,
        *,
        now: float,
        max_attempts: int,
        delivery: Callable[[Job], Delivery | None] | None = None,
    ) -> Requeued:
        """Put Running jobs whose lease expired before ``now`` back to Pending.

        A job that already used ``max_attempts`` attempts is failed instead (and
        returned); a job with ``cancel_requested`` is cancelled instead, and
        returned likewise. ``delivery``, when given, builds the callback of each job
        ended that way (``None``: no callback); the deliveries are written in the
        same transaction, so a crash cannot leave a job final without its callback.
        ``now`` may be ``inf`` (every Running job, at start-up of an exclusive
        store); the timestamps written then come from the clock.
        """

    async def set_progress(self, job_id: str, progress_percent: float) -> None:
        """Record progress (0-100) of a Running job; ignored for other states."""

    async def set_image(self, job_id: str, image: Mapping[str, Any]) -> None:
        """Record what a Running job's image is (a JSON object); ignored for other states.

        Only this writes ``Job.image``: a final write leaves it as it is.
        """

    async def request_cancel(self, job_id: str) -> Job | None:
        """Cancel a Pending job at once, or flag a Running one for cancellation.

        Returns the job as it is afterwards, ``None`` if there is no such job.
        Terminal jobs are returned unchanged.
        """

    async def finish(
        self,
        job: Job,
        *,
        expected: JobStatus,
        result: Mapping[str, Any] | None = None,
        delivery: Delivery | None = None,
        lease_owner: str | None = None,
    ) -> None:
        """Write ``job`` (already moved to its new status) if it is still ``expected``
        and, with ``lease_owner``, still leased to it: a process that lost the lease
        (it expired, and the job went back to Pending or on to another) cannot end it.

        The result and the callback delivery are written in the same transaction
        as the status, so a finished job never lacks its callback. Raises
        :class:`StaleJob` when the job is no longer in ``expected`` (or leased to
        ``lease_owner``), and
        :class:`~primaa.jobs.model.InvalidTransition` when ``expected`` → ``job.status``
        is not a transition at all. A ``cancel_requested`` flag set meanwhile is kept.
        """

    async def get_result(self, job_id: str) -> Mapping[str, Any] | None:
        """The stored result: the Feature, or for a large one the reference to its file
        (see :mod:`primaa.results.files`), which the store keeps like any document."""

    async def delete(self, job_id: str) -> Deleted | None:
        """Remove a finished job with its result and callbacks, in one transaction.

        Returns what was removed (the result, so the caller can remove its file), or
        ``None`` when there is no such job; a job not finished is :class:`StaleJob`.
        """

    async def count_by_status(self) -> Mapping[tuple[str, JobStatus], int]:
        """Number of jobs per (algorithm, status), for metrics and back-pressure."""

    async def due_deliveries(self, *, now: float, limit: int) -> builtins.list[Delivery]:
        """Pending deliveries whose next attempt is due, oldest first, claimed or not."""

    async def claim_deliveries(
        self, *, holder: str, now: float, claim_seconds: float, limit: int, per_host: int
    ) -> builtins.list[Delivery]:
        """Claim up to ``limit`` due deliveries for ``holder`` until ``now + claim_seconds``.

        Oldest first; a delivery claimed by anyone and not expired is left out, and so
        is any delivery to a receiver host that already has ``per_host`` claims in
        flight (one slow receiver cannot take every slot). A claim whose holder died
        expires and is taken over. Each attempt is sent by the holder of its claim only.
        """

    async def record_attempt(
        self,
        delivery_id: str,
        attempt: DeliveryAttempt,
        *,
        status: DeliveryStatus,
        next_attempt_at: float | None,
        holder: str | None = None,
    ) -> None:
        """Append an attempt, set the delivery's new status and next attempt time, and
        give its claim up.

        ``next_attempt_at=None`` keeps the current time; an unknown delivery is a
        ``KeyError``. With ``holder``, only while ``holder`` holds the claim: a claim
        taken over by another process is :class:`LostClaim`, and nothing is written.
        """

    async def release_deliveries(self, delivery_ids: Sequence[str] | None, *, holder: str) -> None:
        """Give claims back without an attempt, so they are due again at once.

        ``delivery_ids`` held by ``holder`` (an outbox that stops mid-send), or with
        ``None`` every claim of every holder (the start of a store one process owns:
        its claims are a previous run's).
        """

    async def deliveries_for(self, job_id: str) -> builtins.list[Delivery]: ...

    async def add_delivery(self, delivery: Delivery) -> None:
        """Queue a delivery outside a job transition (redelivery on request).

        ``KeyError`` when the job does not exist, ``ValueError`` when the delivery id is taken.
        """


class DeliveryStore(Protocol):
    """The part of the store the outbox uses: due callbacks claimed, attempts recorded."""

    async def due_deliveries(self, *, now: float, limit: int) -> builtins.list[Delivery]: ...

    async def claim_deliveries(
        self, *, holder: str, now: float, claim_seconds: float, limit: int, per_host: int
    ) -> builtins.list[Delivery]: ...

    async def record_attempt(
        self,
        delivery_id: str,
        attempt: DeliveryAttempt,
        *,
        status: DeliveryStatus,
        next_attempt_at: float | None,
        holder: str | None = None,
    ) -> None: ...

    async def release_deliveries(
        self, delivery_ids: Sequence[str] | None, *, holder: str
    ) -> None: ...
