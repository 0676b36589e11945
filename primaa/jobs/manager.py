"""The job manager: the only place that decides what happens to a job.

It validates submissions, hands Pending jobs to the executor as capacity frees
up, renews its leases, and writes every final state once (shielded from
cancellation, with the callback delivery in the same store write).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import dataclasses
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import marshmallow
import structlog

from primaa.imaging.decode import ImageDecodeError, decode_image
from primaa.imaging.fetch import FetchError
from primaa.jobs.errors import (
    CannotRedeliver,
    InvalidParameters,
    InvalidRequest,
    JobNotFound,
    ResultNotReady,
    ShuttingDown,
    TooManyJobs,
    UnknownAlgorithm,
    schema_messages,
)
from primaa.jobs.model import Delivery, Job, JobState, JobStatus, new_id
from primaa.jobs.ports import (
    CpuExecutor,
    ImageSource,
    JobInterrupted,
    Notifier,
    OutOfMemory,
    WorkerCrashed,
    WorkerLost,
)
from primaa.metrics import Metrics
from primaa.plugins.algorithm import (
    AlgorithmResult,
    AnyAlgorithm,
    AsyncAlgorithm,
    JobCancelled,
    percent,
)
from primaa.plugins.registry import AlgorithmRegistry
from primaa.results.feature import failure_feature, result_feature
from primaa.store.protocol import JobPage, JobStore, Requeued, StaleJob

log = structlog.get_logger(__name__)

#: Seconds a client is told to wait when it submits to a service that is stopping.
SHUTDOWN_RETRY_AFTER = 5


@dataclasses.dataclass(frozen=True, slots=True)
class JobRequest:
    """A validated-by-schema submission, before the manager's own checks."""

    algorithm: str
    parameters: Mapping[str, Any]
    image_url: str | None = None
    image_path: Path | None = None
    callback_url: str | None = None
    callback_token: str | None = None
    timeout: float | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class ManagerPolicy:
    """The knobs of the manager, taken from Settings in app.py."""

    cpu_slots: int
    io_slots: int
    lease_seconds: float
    max_attempts: int
    job_timeout: float
    max_job_timeout: float
    max_unfinished: int
    max_image_pixels: int
    spool_dir: Path
    #: How often leases are renewed, progress flushed and expired leases swept.
    housekeeping_interval: float = 1.0


@dataclasses.dataclass(slots=True)
class _Active:
    """A job this process is running."""

    job: Job
    task: asyncio.Task[None] | None = None
    stage: str = "starting"
    cancel_requested: bool = False
    progress: float = 0.0
    progress_dirty: bool = False

    def interrupt_if_not_running(self) -> None:
        """Cancel the job's task while it is fetching or waiting for a slot (not yet running)."""
        if self.stage in {"fetching", "waiting"} and self.task is not None:
            self.task.cancel()


class JobManager:
    def __init__(
        self,
        *,
        store: JobStore,
        registry: AlgorithmRegistry,
        executor: CpuExecutor,
        images: ImageSource,
        notifier: Notifier,
        metrics: Metrics,
        policy: ManagerPolicy,
        check_url: Callable[[str], object] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.registry = registry
        self._executor = executor
        self._images = images
        self._notifier = notifier
        self._metrics = metrics
        self._policy = policy
        self._check_url = check_url
        self._clock = clock
        self.instance_id = f"primaa-{uuid.uuid4().hex[:12]}"
        self._active: dict[str, _Active] = {}
        #: One parameter schema per algorithm: building a marshmallow schema costs three
        #: times as much as loading a submission's parameters with it.
        self._parameter_schemas: dict[str, marshmallow.Schema] = {}
        self._wakeup = asyncio.Event()
        self._cpu = asyncio.Semaphore(policy.cpu_slots)
        self._io = asyncio.Semaphore(policy.io_slots)
        self._capacity = 2 * policy.cpu_slots + policy.io_slots
        self._unfinished_estimate = 0
        self._unfinished_checked_at = float("-inf")
        #: Submissions admitted but not yet stored, and how many were stored in all:
        #: with them a burst of concurrent submissions cannot overshoot the limit.
        self._creating = 0
        self._created_total = 0
        self._admission = asyncio.Lock()
        self._draining = False
        self._closing = False
        self._stopped = asyncio.Event()
        executor.on_progress(self._on_progress)

    # -- client-facing operations ---------------------------------------------------------

    def algorithm(self, name: str) -> AnyAlgorithm:
        algorithm = self.registry.get(name)
        if algorithm is None:
            raise UnknownAlgorithm(name, self.registry.names())
        return algorithm

    async def submit(self, request: JobRequest, *, owner: str | None = None) -> Job:
        if self._draining or self._closing:
            raise ShuttingDown(retry_after=SHUTDOWN_RETRY_AFTER)
        algorithm = self.algorithm(request.algorithm)
        try:
            parameters = self._parameter_schema(algorithm).load(dict(request.parameters))
        except marshmallow.ValidationError as exc:
            raise InvalidParameters(algorithm.name, schema_messages(exc)) from None
        if request.timeout is not None and request.timeout > self._policy.max_job_timeout:
            raise InvalidRequest(
                "timeout", f"must not exceed {self._policy.max_job_timeout:g} s on this server"
            )
        for field, url in (
            ("image_url", request.image_url),
            ("callback_url", request.callback_url),
        ):
            if url is not None and self._check_url is not None:
                try:
                    self._check_url(url)
                except ValueError as exc:
                    raise InvalidRequest(field, str(exc)) from None
        await self._check_capacity()
        try:
            job = await self._create(algorithm.name, parameters, request, owner)
        finally:
            self._creating -= 1
        self._unfinished_estimate += 1
        self._created_total += 1
        self._wakeup.set()
        log.info("job_submitted", job_id=job.job_id, algorithm=job.algorithm)
        return job

    def _parameter_schema(self, algorithm: AnyAlgorithm) -> marshmallow.Schema:
        schema = self._parameter_schemas.get(algorithm.name)
        if schema is None:
            schema = self._parameter_schemas[algorithm.name] = algorithm.Parameters()
        return schema

    async def _create(
        self,
        algorithm: str,
        parameters: Mapping[str, Any],
        request: JobRequest,
        owner: str | None,
    ) -> Job:
        now = self._clock()
        job = Job(
            job_id=new_id(),
            algorithm=algorithm,
            parameters=parameters,
            image_url=request.image_url,
            image_path=str(request.image_path) if request.image_path else None,
            callback_url=request.callback_url,
            callback_token=request.callback_token,
            owner=owner,
            timeout=request.timeout,
            created_at=now,
            updated_at=now,
        )
        await self.store.create(job)
        return job

    async def _check_capacity(self) -> None:
        """Admit one submission (the caller must decrement ``_creating``) or raise 429.

        The store count (the only one that sees other replicas and finished jobs)
        is refreshed at most once a second; between refreshes the local count is
        kept exact: submissions being stored count as unfinished from the moment
        they are admitted, so concurrent submissions cannot all see the same room.
        A refresh may count a job twice (stored during the query), never miss one.
        """
        async with self._admission:
            now = self._clock()
            if now - self._unfinished_checked_at > 1.0:
                created_before = self._created_total
                counts = await self.store.count_by_status()
                self._unfinished_estimate = sum(
                    n for (_, status), n in counts.items() if not status.is_terminal
                ) + (self._created_total - created_before)
                self._unfinished_checked_at = now
            if self._unfinished_estimate + self._creating >= self._policy.max_unfinished:
                raise TooManyJobs(self._policy.max_unfinished, retry_after=5)
            self._creating += 1

    async def get(self, job_id: str, *, owner: str | None = None) -> Job:
        job = _visible(await self.store.get(job_id), job_id, owner)
        active = self._active.get(job_id)
        if active is not None and job.status is JobStatus.RUNNING:
            job = job.evolve(progress=max(job.progress, active.progress))
        return job

    async def state(self, job_id: str, *, owner: str | None = None) -> JobState:
        """Status and error alone (the original API's poll), without reading the whole job."""
        return _visible(await self.store.state(job_id), job_id, owner)

    async def list(
        self,
        *,
        status: JobStatus | None = None,
        algorithm: str | None = None,
        owner: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> JobPage:
        return await self.store.list(
            status=status, algorithm=algorithm, owner=owner, cursor=cursor, limit=limit
        )

    async def result(self, job_id: str, *, owner: str | None = None) -> Mapping[str, Any]:
        job = await self.get(job_id, owner=owner)
        if job.status is not JobStatus.COMPLETED:
            raise ResultNotReady(job_id, job.status)
        result = await self.store.get_result(job_id)
        if result is None:
            raise ResultNotReady(job_id, job.status)
        return result

    async def deliveries(self, job: Job) -> builtins.list[Delivery]:
        """The callback deliveries of a job the caller already read (and may see)."""
        return await self.store.deliveries_for(job.job_id) if job.callback_url else []

    async def redeliver(self, job_id: str, *, owner: str | None = None) -> Delivery:
        """Queue the final job's callback again, as a new message with a new delivery id.

        Receivers de-duplicate on ``webhook-id``; a redelivery is asked for because
        the first message was lost or mishandled, so it must not be dropped as a
        duplicate. The payload is the one sent first (the job's final Feature). An
        earlier delivery still retrying keeps its own schedule.
        """
        job = await self.get(job_id, owner=owner)
        if not job.status.is_terminal:
            raise CannotRedeliver(job_id, f"is {job.status}; only a finished job calls back")
        if not job.callback_url:
            raise CannotRedeliver(job_id, "has no callback URL")
        earlier = await self.store.deliveries_for(job_id)
        if earlier:
            payload = min(earlier, key=lambda d: d.created_at).payload
        elif job.status is JobStatus.COMPLETED:
            payload = await self.store.get_result(job_id) or failure_feature(job)
        else:
            payload = failure_feature(job)
        delivery = self._delivery(job, payload)
        await self.store.add_delivery(delivery)
        self._notifier.wake()
        log.info("job_redelivery", job_id=job_id, delivery_id=delivery.delivery_id)
        return delivery

    async def cancel(self, job_id: str, *, owner: str | None = None) -> Job:
        """Cancel at once when Pending; when Running, stop at the next progress report
        (the executor kills a worker that has not stopped within its grace)."""
        job = await self.get(job_id, owner=owner)
        if job.status is JobStatus.PENDING:
            with contextlib.suppress(StaleJob):
                return await self._finish(
                    job, JobStatus.CANCELLED, expected=JobStatus.PENDING, error="cancelled"
                )
            job = await self.get(job_id, owner=owner)
        if job.status is JobStatus.RUNNING:
            job = await self.store.request_cancel(job_id) or job
            self._cancel_local(job_id)
        return job

    def _cancel_local(self, job_id: str) -> None:
        active = self._active.get(job_id)
        if active is None:
            return
        active.cancel_requested = True
        self._executor.cancel(job_id)
        active.interrupt_if_not_running()

    # -- the dispatcher ----------------------------------------------------------------------

    async def recover(self) -> None:
        """At start-up, hand back the jobs a previous run of an exclusive store left Running."""
        if self.store.exclusive:
            outcome = await self.store.requeue_expired(
                now=float("inf"),
                max_attempts=self._policy.max_attempts,
                delivery=self._lease_lost_callback,
            )
            await self._after_requeue(outcome)

    async def run(self) -> None:
        """Claim Pending jobs while there is capacity; sleep until woken or polled."""
        while not (self._closing or self._draining):
            self._wakeup.clear()
            free = self._capacity - len(self._active)
            claimed: list[Job] = []
            if free > 0:
                claimed = await self.store.claim(
                    owner=self.instance_id,
                    lease_seconds=self._policy.lease_seconds,
                    limit=free,
                    now=self._clock(),
                )
                if self._closing or self._draining:
                    # The drain began during the claim: these never started.
                    for job in claimed:
                        await self._release(job)
                    return
                for job in claimed:
                    self._start(job)
            if len(claimed) < free or free <= 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), self._policy.housekeeping_interval)

    def _start(self, job: Job) -> None:
        active = _Active(job=job, cancel_requested=job.cancel_requested)
        self._active[job.job_id] = active
        active.task = asyncio.create_task(self._execute(active), name=f"job-{job.job_id}")

    async def housekeeping(self) -> None:
        """Renew leases, flush progress, and requeue jobs whose lease expired elsewhere."""
        last_renewal = self._clock()
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), self._policy.housekeeping_interval)
            if self._closing:
                return
            now = self._clock()
            for job_id, active in list(self._active.items()):
                if active.progress_dirty:
                    active.progress_dirty = False
                    await self.store.set_progress(job_id, active.progress)
            if now - last_renewal >= self._policy.lease_seconds / 3:
                last_renewal = now
                if self._active:
                    await self.store.renew(
                        list(self._active),
                        owner=self.instance_id,
                        lease_seconds=self._policy.lease_seconds,
                        now=now,
                    )
                outcome = await self.store.requeue_expired(
                    now=now,
                    max_attempts=self._policy.max_attempts,
                    delivery=self._lease_lost_callback,
                )
                await self._after_requeue(outcome)

    def _lease_lost_callback(self, job: Job) -> Delivery | None:
        """The callback of a job the lease sweep ended; the store writes it with the job."""
        return self._delivery(job, failure_feature(job)) if job.callback_url else None

    async def _after_requeue(self, outcome: Requeued) -> None:
        """Account for the jobs the store ended while sweeping expired leases.

        Their callbacks were written by the store in the same transaction (see
        :meth:`_lease_lost_callback`): a crash here cannot lose them.
        """
        for job in (*outcome.failed, *outcome.cancelled):
            log.warning("job_lease_lost", job_id=job.job_id, status=str(job.status))
            self._metrics.jobs_finished.labels(job.algorithm, str(job.status)).inc()
            self._unfinished_estimate = max(0, self._unfinished_estimate - 1)
            if job.callback_url:
                self._notifier.wake()
        if outcome.retried:
            log.info("jobs_requeued", count=len(outcome.retried))
            self._wakeup.set()

    def _on_progress(self, job_id: str, pct: float) -> None:
        active = self._active.get(job_id)
        if active is not None and pct > active.progress:
            active.progress = pct
            active.progress_dirty = True

    @property
    def draining(self) -> bool:
        """True once :meth:`drain` began: no new submissions, no new claims."""
        return self._draining

    async def drain(self, grace: float) -> None:
        """Stop taking work and let the algorithms already running finish within ``grace`` s.

        Jobs not yet running (fetching their image, waiting for a slot) go back to
        Pending at once, without counting an attempt: they would only delay the
        stop. Whatever still runs when the grace ends is handed back by :meth:`close`.
        """
        self._draining = True
        self._wakeup.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        log.info("drain_started", running=len(self._active), grace=grace)
        while self._active and (left := deadline - loop.time()) > 0:
            for active in list(self._active.values()):
                active.interrupt_if_not_running()
            tasks = [a.task for a in self._active.values() if a.task is not None]
            if tasks:
                await asyncio.wait(tasks, timeout=min(left, 0.05))
            else:
                await asyncio.sleep(min(left, 0.05))
        log.info("drain_finished", still_running=len(self._active))
        await self.close()

    async def close(self) -> None:
        """Stop the running jobs of this process and hand them back as Pending.

        The dispatcher and housekeeping loops return at their next step, so none
        of them is cut off in the middle of a store write.
        """
        self._closing = True
        self._wakeup.set()
        self._stopped.set()
        tasks = [a.task for a in self._active.values() if a.task is not None]
        for job_id in list(self._active):
            self._executor.cancel(job_id)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- one job -------------------------------------------------------------------------------

    async def _execute(self, active: _Active) -> None:
        job = active.job
        structlog.contextvars.bind_contextvars(job_id=job.job_id)
        try:
            if active.cancel_requested:
                raise JobCancelled(job.job_id)
            algorithm = self.algorithm(job.algorithm)
            self._executor.forget(job.job_id)
            active.stage = "fetching"
            image_path = await self._image_path(job)
            limit = min(
                job.timeout or algorithm.default_timeout or self._policy.job_timeout,
                self._policy.max_job_timeout,
            )
            result = await self._run_algorithm(active, algorithm, image_path, limit)
            await self._finish(job, JobStatus.COMPLETED, result=result)
        except asyncio.CancelledError:
            if active.cancel_requested and not self._closing:
                await self._finish(job, JobStatus.CANCELLED, error="cancelled")
            else:
                await self._release(job)
                raise
        except JobCancelled:
            await self._finish(job, JobStatus.CANCELLED, error="cancelled")
        except WorkerCrashed as exc:
            await self._finish(job, JobStatus.FAILED, error=str(exc))
        except JobInterrupted as exc:
            if active.cancel_requested:
                await self._finish(job, JobStatus.CANCELLED, error="cancelled")
            else:
                await self._retry(job, reason=str(exc), counted=False)
        except WorkerLost as exc:
            if job.attempts < self._policy.max_attempts:
                await self._retry(job, reason=str(exc))
            else:
                await self._finish(
                    job, JobStatus.FAILED, error=f"{exc} (after {job.attempts} attempts)"
                )
        except Exception as exc:
            await self._finish(job, JobStatus.FAILED, error=_describe(exc))
        finally:
            self._active.pop(job.job_id, None)
            self._wakeup.set()

    async def _image_path(self, job: Job) -> Path:
        if job.image_path is not None:
            return Path(job.image_path)
        if job.image_url is None:
            raise ValueError("the job has neither an image URL nor an uploaded image")
        return await self._images.fetch(job.image_url, job.job_id)

    async def _run_algorithm(
        self, active: _Active, algorithm: AnyAlgorithm, image_path: Path, limit: float
    ) -> AlgorithmResult:
        """Wait for a slot of the algorithm's kind, then run it within its time limit."""
        job = active.job
        active.stage = "waiting"
        slots = self._io if isinstance(algorithm, AsyncAlgorithm) else self._cpu
        async with slots:
            active.stage = "running"
            try:
                async with asyncio.timeout(limit) as deadline:
                    if isinstance(algorithm, AsyncAlgorithm):
                        return await self._run_on_loop(active, algorithm, image_path)
                    return await self._executor.run(
                        job.job_id, job.algorithm, image_path, job.parameters
                    )
            except TimeoutError:
                if not deadline.expired():
                    raise
                self._executor.cancel(job.job_id)
                raise _TimedOut(limit) from None

    async def _run_on_loop(
        self, active: _Active, algorithm: AsyncAlgorithm, image_path: Path
    ) -> AlgorithmResult:
        job = active.job
        image = await asyncio.to_thread(
            decode_image, image_path, max_pixels=self._policy.max_image_pixels
        )

        def progress(fraction: float) -> None:
            if active.cancel_requested:
                raise JobCancelled(job.job_id)
            self._on_progress(job.job_id, percent(fraction))

        return await algorithm.run(image, job.parameters, progress)

    async def _finish(
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
        delivery = None
        if final.callback_url:
            delivery = self._delivery(final, feature or failure_feature(final))
        await asyncio.shield(
            self.store.finish(final, expected=expected, result=feature, delivery=delivery)
        )
        self._cleanup_spool(final)
        self._unfinished_estimate = max(0, self._unfinished_estimate - 1)
        self._metrics.jobs_finished.labels(final.algorithm, str(status)).inc()
        seconds = (final.finished_at or 0.0) - (final.started_at or final.created_at)
        self._metrics.job_duration.labels(final.algorithm, str(status)).observe(seconds)
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

    def _delivery(self, job: Job, payload: Mapping[str, Any]) -> Delivery:
        assert job.callback_url is not None
        return Delivery(
            delivery_id="msg_" + uuid.uuid4().hex,
            job_id=job.job_id,
            url=job.callback_url,
            payload=payload,
            token=job.callback_token,
            next_attempt_at=self._clock(),
        )

    async def _retry(self, job: Job, *, reason: str, counted: bool = True) -> None:
        """Back to Pending after a lost worker. An uncounted retry (a neighbour's worker
        died) gives the attempt back: it cannot loop, since each interruption costs the
        job that caused it its only attempt.
        """
        log.warning(
            "job_error_retry",
            job_id=job.job_id,
            attempts=job.attempts,
            counted=counted,
            error=reason,
        )
        await self._back_to_pending(job, counted=counted)

    async def _release(self, job: Job) -> None:
        """Hand a job back on shutdown without counting the interrupted attempt."""
        await self._back_to_pending(job, counted=False)
        log.info("job_released", job_id=job.job_id)

    async def _back_to_pending(self, job: Job, *, counted: bool) -> None:
        """Move a Running job back to Pending, whatever cancels the caller."""
        attempts = job.attempts if counted else max(job.attempts - 1, 0)
        with contextlib.suppress(StaleJob):
            await asyncio.shield(
                self.store.finish(
                    job.moved_to(JobStatus.PENDING, attempts=attempts), expected=JobStatus.RUNNING
                )
            )

    def _cleanup_spool(self, job: Job) -> None:
        """Spooled images are kept for retries and removed once the job is final."""
        if job.image_path is not None:
            Path(job.image_path).unlink(missing_ok=True)
        if job.image_url is not None:
            (self._policy.spool_dir / f"{job.job_id}.img").unlink(missing_ok=True)


_Owned = TypeVar("_Owned", Job, JobState)


def _visible(found: _Owned | None, job_id: str, owner: str | None) -> _Owned:
    """What was read of a job, if the caller may see it: another owner's job is not found."""
    if found is None or (owner is not None and found.owner != owner):
        raise JobNotFound(job_id)
    return found


class _TimedOut(Exception):
    def __init__(self, limit: float) -> None:
        super().__init__(f"timed out after {limit:g} s")


def _describe(exc: BaseException) -> str:
    """A client-safe message: ours as they are, an algorithm's bug with its exception type."""
    if isinstance(exc, ImageDecodeError | FetchError | _TimedOut | UnknownAlgorithm | OutOfMemory):
        return str(exc)
    return f"the algorithm failed: {type(exc).__name__}: {exc}"
