"""The dispatcher: claims Pending jobs while there is room, keeps their leases, and
hands them back when the service stops.

Three loops' worth of work, none of it about a single job: the claim loop starts
a :class:`~primaa.jobs.runner.JobRunner` task per claimed job; housekeeping
flushes progress, renews this process's leases and requeues jobs whose lease
expired elsewhere; drain and close stop both and hand running jobs back.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from collections.abc import Callable

import structlog

from primaa.jobs.admission import Admission
from primaa.jobs.claim_plan import ClaimPlan
from primaa.jobs.images import JobImages
from primaa.jobs.large_results import LargeResults
from primaa.jobs.model import Job
from primaa.jobs.outcomes import Outcomes
from primaa.jobs.runner import JobRunner
from primaa.jobs.running import RunningJob, RunningJobs
from primaa.jobs.storage import JobStore, Requeued, StaleJob

log = structlog.get_logger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class DispatchPolicy:
    #: Jobs of each kind this process holds at once (running, fetching or waiting for a slot).
    plan: ClaimPlan
    lease_seconds: float
    max_attempts: int
    #: How often progress is flushed and, on a store shared by replicas, expired leases
    #: swept (leases are renewed every ``lease_seconds / 3``).
    housekeeping_interval: float = 1.0
    #: Seconds between claims when nothing wakes the claim loop (a fallback: new jobs,
    #: freed room and, between replicas, store notifications wake it).
    poll_interval: float = 1.0


class Dispatcher:
    def __init__(
        self,
        *,
        store: JobStore,
        running: RunningJobs,
        runner: JobRunner,
        outcomes: Outcomes,
        admission: Admission,
        policy: DispatchPolicy,
        images: JobImages | None = None,
        results: LargeResults | None = None,
        clock: Callable[[], float],
    ) -> None:
        self._store = store
        self._running = running
        self._runner = runner
        self._outcomes = outcomes
        self._admission = admission
        self._policy = policy
        self._images = images
        self._results = results
        self._clock = clock
        #: This process as the holder of leases (not to be confused with a job's client).
        self.lease_owner = f"primaa-{uuid.uuid4().hex[:12]}"
        self._wakeup = asyncio.Event()
        self._stopped = asyncio.Event()
        self._closing = False

    @property
    def closing(self) -> bool:
        """True once :meth:`close` began: running jobs are being handed back."""
        return self._closing

    @property
    def _stopping(self) -> bool:
        return self._closing or self._admission.closed

    def wake(self) -> None:
        """A job may be waiting, or room freed up: claim now rather than at the next poll."""
        self._wakeup.set()

    async def recover(self) -> None:
        """At start-up, hand back the jobs a previous run of an exclusive store left Running."""
        if self._store.exclusive:
            await self._requeue_expired(float("inf"))

    async def run(self) -> None:
        """Claim Pending jobs of each kind while there is room for it; sleep until woken
        or polled."""
        while not self._stopping:
            self._wakeup.clear()
            more = False
            held = [running.job.algorithm for running in self._running]
            for algorithms, room in self._policy.plan.claims(held):
                claimed = await self._store.claim(
                    lease_owner=self.lease_owner,
                    lease_seconds=self._policy.lease_seconds,
                    limit=room,
                    now=self._clock(),
                    algorithms=algorithms,
                )
                if self._stopping:
                    # The drain began during the claim: these never started.
                    for job in claimed:
                        await self._outcomes.release(job)
                    return
                for job in claimed:
                    self._start(job)
                # A full claim may have left more of its kind Pending: claim again.
                more = more or len(claimed) == room
            if not more:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), self._policy.poll_interval)

    def _start(self, job: Job) -> None:
        running = self._running.add(job)
        running.task = asyncio.create_task(self._execute(running), name=f"job-{job.job_id}")

    async def _execute(self, running: RunningJob) -> None:
        try:
            await self._runner.execute(running)
        except StaleJob:
            # Another actor moved the job first (its lease expired and it was requeued,
            # say): this run's outcome no longer counts.
            log.warning("job_outcome_dropped", job_id=running.job_id, reason="lease lost")
        except Exception:
            # The outcome could not be written (the store refused for minutes): the job
            # stays Running until its lease expires, then runs again.
            log.exception("job_outcome_not_written", job_id=running.job_id)
        finally:
            self._running.remove(running.job_id)
            self._wakeup.set()

    async def housekeeping(self) -> None:
        """Renew leases, flush progress, requeue jobs whose lease expired elsewhere, and
        remove finished jobs' images past their retention and result files no job names."""
        last_renewal = self._clock()
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), self._policy.housekeeping_interval)
            if self._closing:
                return
            now = self._clock()
            for running in self._running:
                if running.progress_dirty:
                    running.progress_dirty = False
                    await self._store.set_progress(running.job_id, running.progress_percent)
            renewal = now - last_renewal >= self._policy.lease_seconds / 3
            if renewal:
                last_renewal = now
                if held := self._running.ids():
                    await self._store.renew(
                        held,
                        lease_owner=self.lease_owner,
                        lease_seconds=self._policy.lease_seconds,
                        now=now,
                    )
            if renewal or not self._store.exclusive:
                # Shared by replicas: swept every interval, so a dead replica's jobs
                # are back at most one interval after their lease ends, not a third
                # of a lease. A store this process owns only has leases it renews.
                await self._requeue_expired(now)
            if self._images is not None:
                await self._images.sweep()
            if self._results is not None:
                await self._results.sweep_orphans(self._store.get_result)

    async def _requeue_expired(self, now: float) -> None:
        outcome: Requeued = await self._store.requeue_expired(
            now=now,
            max_attempts=self._policy.max_attempts,
            delivery=self._outcomes.lease_lost_callback,
        )
        self._outcomes.account_requeued(outcome)
        if outcome.retried:
            self._wakeup.set()

    async def drain(self, grace: float) -> None:
        """Stop taking work and let the algorithms already running finish within ``grace`` s.

        Jobs not yet running (fetching their image, waiting for a slot) go back to
        Pending at once, without counting an attempt: they would only delay the
        stop. Whatever still runs when the grace ends is handed back by :meth:`close`.
        """
        self._admission.close()
        self._wakeup.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        log.info("drain_started", running=len(self._running), grace=grace)
        while len(self._running) and (left := deadline - loop.time()) > 0:
            for running in self._running:
                running.interrupt_if_not_running()
            if tasks := self._running.tasks():
                await asyncio.wait(tasks, timeout=min(left, 0.05))
            else:
                await asyncio.sleep(min(left, 0.05))
        log.info("drain_finished", still_running=len(self._running))
        await self.close()

    async def close(self) -> None:
        """Stop the running jobs of this process and hand them back as Pending.

        The claim and housekeeping loops return at their next step, so none of
        them is cut off in the middle of a store write.
        """
        self._closing = True
        self._wakeup.set()
        self._stopped.set()
        tasks = self._running.tasks()
        for running in self._running:
            running.releasing = True
            if running.executor is not None:
                running.executor.cancel(running.job_id)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
