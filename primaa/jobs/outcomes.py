"""How a job ends: the decision for a failed run, and the one store write of each ending.

Every write here is shielded from cancellation: once a job's outcome is known,
a shutdown or a cancelled task cannot leave it half-written. A final state and
its callback delivery are one store write, so a finished job never lacks its
callback.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

import structlog

from primaa.jobs.admission import Admission
from primaa.jobs.errors import StorageUnavailable, UnknownAlgorithm
from primaa.jobs.images import JobImages
from primaa.jobs.large_results import LargeResults
from primaa.jobs.model import Delivery, Job, JobStatus
from primaa.jobs.ports import (
    JobInterrupted,
    JobMetrics,
    Notifier,
    TaskError,
    WorkerCrashed,
    WorkerLost,
)
from primaa.jobs.storage import JobStore, Requeued, StaleJob
from primaa.plugins.algorithm import AlgorithmResult, JobCancelled
from primaa.results.feature import failure_feature, result_feature

log = structlog.get_logger(__name__)

#: Retries of a final write the store refused for want of space: first delay, longest
#: delay, and how long to keep trying (seconds).
FIRST_WRITE_RETRY_DELAY = 0.1
MAX_WRITE_RETRY_DELAY = 2.0
WRITE_RETRY_SECONDS = 300.0


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    """What to do with a job whose run raised."""

    action: Literal["fail", "cancel", "retry"]
    error: str | None = None
    #: A retry that counts as an attempt (``False``: the attempt is given back).
    counted: bool = True


@dataclasses.dataclass(frozen=True, slots=True)
class FailurePolicy:
    """Turns what a run raised into a :class:`Decision`; the one place that knows
    which failures are retried, which fail the job, and what the client reads."""

    max_attempts: int

    def decide(self, exc: BaseException, job: Job, *, cancel_requested: bool) -> Decision:
        if isinstance(exc, JobCancelled):
            return Decision("cancel")
        if isinstance(exc, WorkerCrashed):
            return Decision("fail", str(exc))
        if isinstance(exc, JobInterrupted):
            if cancel_requested:
                return Decision("cancel")
            return Decision("retry", str(exc), counted=False)
        if isinstance(exc, WorkerLost):
            if job.attempts < self.max_attempts:
                return Decision("retry", str(exc))
            return Decision("fail", f"{exc} (after {job.attempts} attempts)")
        return Decision("fail", describe(exc))


def describe(exc: BaseException) -> str:
    """A client-safe message: ours as they are, an algorithm's bug with its exception type."""
    if isinstance(exc, TaskError | UnknownAlgorithm):
        return str(exc)
    return f"the algorithm failed: {type(exc).__name__}: {exc}"


class Outcomes:
    """Writes each ending of a job once, with its callback, and accounts for it."""

    def __init__(
        self,
        *,
        store: JobStore,
        notifier: Notifier,
        metrics: JobMetrics,
        admission: Admission,
        images: JobImages,
        results: LargeResults,
        clock: Callable[[], float],
    ) -> None:
        self._store = store
        self._results = results
        self._notifier = notifier
        self._metrics = metrics
        self._admission = admission
        self._images = images
        self._clock = clock

    async def finish(
        self,
        job: Job,
        status: JobStatus,
        *,
        expected: JobStatus = JobStatus.RUNNING,
        result: AlgorithmResult | None = None,
        error: str | None = None,
    ) -> Job:
        """Write the final state once, with its callback, whatever cancels the caller."""
        final = job.moved_to(status, now=self._clock(), error=error)
        feature = result_feature(final, result) if result is not None else None
        delivery = await asyncio.shield(
            self._write_final(
                final,
                feature,
                expected=expected,
                # A Running job is this process's to end only while it holds the lease.
                lease_owner=job.lease_owner if expected is JobStatus.RUNNING else None,
            )
        )
        self._images.release(final)
        self._admission.job_ended()
        seconds = (final.finished_at or 0.0) - (final.started_at or final.created_at)
        self._metrics.job_finished(final.algorithm, str(status), seconds)
        if delivery is not None:
            self._notifier.wake()
        log.info(
            "job_" + str(status).lower(),
            job_id=final.job_id,
            algorithm=final.algorithm,
            attempts=final.attempts,
            error=error,
            seconds=round(seconds, 3),
        )
        return final

    async def _write_final(
        self,
        final: Job,
        feature: Mapping[str, Any] | None,
        *,
        expected: JobStatus,
        lease_owner: str | None,
    ) -> Delivery | None:
        """Place the result (a large one in a file), then write the job, its result and
        its callback as one; a write that fails for good removes the result's file."""
        prepared = await self._results.prepare(final, feature) if feature is not None else None
        delivery = None
        if final.callback_url:
            delivery = self.delivery(
                final, prepared.callback if prepared is not None else failure_feature(final)
            )
        try:
            await self._retrying(
                final.job_id,
                lambda: self._store.finish(
                    final,
                    expected=expected,
                    result=prepared.stored if prepared is not None else None,
                    delivery=delivery,
                    lease_owner=lease_owner,
                ),
            )
        except BaseException:
            if prepared is not None:
                self._results.discard(prepared)
            raise
        return delivery

    async def apply(self, job: Job, decision: Decision) -> None:
        """Carry out a :class:`FailurePolicy` decision."""
        if decision.action == "cancel":
            await self.finish(job, JobStatus.CANCELLED, error="cancelled")
        elif decision.action == "fail":
            await self.finish(job, JobStatus.FAILED, error=decision.error)
        else:
            log.warning(
                "job_error_retry",
                job_id=job.job_id,
                attempts=job.attempts,
                counted=decision.counted,
                error=decision.error,
            )
            await self._back_to_pending(job, counted=decision.counted)

    async def release(self, job: Job) -> None:
        """Hand a job back on shutdown without counting the interrupted attempt."""
        if await self._back_to_pending(job, counted=False):
            log.info("job_released", job_id=job.job_id)

    async def _back_to_pending(self, job: Job, *, counted: bool) -> bool:
        """Move a Running job back to Pending, whatever cancels the caller.

        An uncounted retry (a neighbour's worker died, or a shutdown) gives the
        attempt back: it cannot loop, since each interruption costs the job that
        caused it its only attempt. ``False`` when the lease was lost meanwhile.
        """
        pending = job.moved_to(
            JobStatus.PENDING, attempts=job.attempts if counted else max(job.attempts - 1, 0)
        )
        try:
            await self._persist(
                job.job_id,
                lambda: self._store.finish(
                    pending, expected=JobStatus.RUNNING, lease_owner=job.lease_owner
                ),
            )
        except StaleJob:
            # The lease was lost meanwhile: the job is another run's (or was ended) now.
            log.warning("job_outcome_dropped", job_id=job.job_id, reason="lease lost")
            return False
        return True

    async def _persist(self, job_id: str, write: Callable[[], Awaitable[None]]) -> None:
        """Run ``write`` to its end whatever cancels the caller, retrying while the store
        cannot write (a full disk): the outcome lands within seconds of space coming back.

        After ``WRITE_RETRY_SECONDS`` it gives up; the job is still Running then, and its
        lease, once expired, hands it back for another run.
        """
        await asyncio.shield(self._retrying(job_id, write))

    async def _retrying(self, job_id: str, write: Callable[[], Awaitable[None]]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WRITE_RETRY_SECONDS
        delay = FIRST_WRITE_RETRY_DELAY
        while True:
            try:
                await write()
                return
            except StorageUnavailable as exc:
                if loop.time() + delay > deadline:
                    raise
                log.warning("job_write_retry", job_id=job_id, error=exc.cause, retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(2 * delay, MAX_WRITE_RETRY_DELAY)

    def delivery(self, job: Job, payload: Mapping[str, Any]) -> Delivery:
        """A new callback message for ``job`` (a new ``delivery_id`` each time)."""
        assert job.callback_url is not None
        return Delivery(
            delivery_id="msg_" + uuid.uuid4().hex,
            job_id=job.job_id,
            url=job.callback_url,
            payload=payload,
            token=job.callback_token,
            next_attempt_at=self._clock(),
        )

    def lease_lost_callback(self, job: Job) -> Delivery | None:
        """The callback of a job the lease sweep ended; the store writes it with the job."""
        return self.delivery(job, failure_feature(job)) if job.callback_url else None

    def account_requeued(self, outcome: Requeued) -> None:
        """Account for the jobs the store ended while sweeping expired leases.

        Their callbacks were written by the store in the same transaction (see
        :meth:`lease_lost_callback`): a crash here cannot lose them.
        """
        for job in (*outcome.failed, *outcome.cancelled):
            log.warning("job_lease_lost", job_id=job.job_id, status=str(job.status))
            self._metrics.job_finished(job.algorithm, str(job.status), None)
            self._admission.job_ended()
            if job.callback_url:
                self._notifier.wake()
        if outcome.retried:
            log.info("jobs_requeued", count=len(outcome.retried))
