"""One claimed job from start to final write: its image, a slot, its executor, its limit.

The runner only orchestrates: which executor runs the task (the process pool for
CPU-bound algorithms, the event loop for I/O-bound ones) is decided by the
algorithm; what a failure means is decided by the :class:`FailurePolicy`; every
write goes through :class:`Outcomes`.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import structlog

from primaa.jobs.model import Job, JobStatus
from primaa.jobs.outcomes import FailurePolicy, Outcomes
from primaa.jobs.ports import Executor, ImageDeferred, ImageSource, Task, TaskError
from primaa.jobs.running import RunningJob
from primaa.plugins.algorithm import AlgorithmResult, AnyAlgorithm, AsyncAlgorithm, JobCancelled

log = structlog.get_logger(__name__)

#: Writes what a job's image is (``JobStore.set_image``).
RecordImage = Callable[[str, Mapping[str, Any]], Awaitable[None]]


class JobTimedOut(TaskError):
    def __init__(self, limit: float) -> None:
        super().__init__(f"timed out after {limit:g} s")


@dataclasses.dataclass(frozen=True, slots=True)
class RunnerLimits:
    #: Algorithms running at once in worker processes, and on the event loop.
    cpu_slots: int
    io_slots: int
    #: Time limit of a job that sets none (its algorithm's default comes first).
    job_timeout: float
    #: No job runs longer, whatever it asks for.
    max_job_timeout: float
    #: Waits before fetching an image again that could not be stored (a full spool):
    #: about a minute in all for space to come back, then the job fails.
    fetch_retry_delays: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0)


class JobRunner:
    def __init__(
        self,
        *,
        lookup: Callable[[str], AnyAlgorithm],
        cpu: Executor,
        io: Executor,
        images: ImageSource,
        record_image: RecordImage,
        outcomes: Outcomes,
        failures: FailurePolicy,
        limits: RunnerLimits,
    ) -> None:
        self._lookup = lookup
        self._cpu = cpu
        self._io = io
        self._images = images
        self._record_image = record_image
        self._outcomes = outcomes
        self._failures = failures
        self._limits = limits
        self._cpu_slots = asyncio.Semaphore(limits.cpu_slots)
        self._io_slots = asyncio.Semaphore(limits.io_slots)

    async def execute(self, running: RunningJob) -> None:
        """Run the job and write its outcome; on shutdown, hand it back as Pending."""
        job = running.job
        structlog.contextvars.bind_contextvars(job_id=job.job_id)
        try:
            if running.cancel_requested:
                raise JobCancelled(job.job_id)
            algorithm = self._lookup(job.algorithm)
            running.executor = self._io if isinstance(algorithm, AsyncAlgorithm) else self._cpu
            running.executor.forget(job.job_id)
            running.stage = "fetching"
            image_path = await self._image_path(job)
            job = running.job = job.evolve(image=await self._images.describe(image_path))
            await self._keep_image(job)
            limit = min(
                job.timeout or algorithm.default_timeout or self._limits.job_timeout,
                self._limits.max_job_timeout,
            )
            result = await self._run(running, algorithm, image_path, limit)
        except asyncio.CancelledError:
            if running.cancel_requested and not running.releasing:
                await self._outcomes.finish(job, JobStatus.CANCELLED, error="cancelled")
            else:
                await self._outcomes.release(job)
                raise
        except Exception as exc:
            decision = self._failures.decide(exc, job, cancel_requested=running.cancel_requested)
            await self._outcomes.apply(job, decision)
        else:
            await self._outcomes.finish(job, JobStatus.COMPLETED, result=result)

    async def _keep_image(self, job: Job) -> None:
        """Store what the image is; a store that cannot take it now does not fail the job."""
        assert job.image is not None
        try:
            await self._record_image(job.job_id, job.image)
        except Exception:
            log.warning("job_image_not_recorded", exc_info=True)

    async def _image_path(self, job: Job) -> Path:
        if job.image_path is not None:
            return Path(job.image_path)
        if job.image_url is None:
            raise ValueError("the job has neither an image URL nor an uploaded image")
        delays = iter(self._limits.fetch_retry_delays)
        while True:
            try:
                return await self._images.fetch(job.image_url, job.job_id)
            except ImageDeferred as exc:
                delay = next(delays, None)
                if delay is None:
                    raise
                log.warning("job_image_deferred", error=str(exc), retry_in=delay)
                await asyncio.sleep(delay)

    async def _run(
        self, running: RunningJob, algorithm: AnyAlgorithm, image_path: Path, limit: float
    ) -> AlgorithmResult:
        """Wait for a slot of the algorithm's kind, then run it within its time limit."""
        job = running.job
        executor = running.executor
        assert executor is not None
        running.stage = "waiting"
        slots = self._io_slots if isinstance(algorithm, AsyncAlgorithm) else self._cpu_slots
        async with slots:
            running.stage = "running"
            task = Task(
                job.job_id, job.algorithm, image_path, job.parameters, pixels=_flat_pixels(job)
            )
            try:
                async with asyncio.timeout(limit) as deadline:
                    return await executor.run(task)
            except TimeoutError:
                if not deadline.expired():
                    raise
                executor.cancel(job.job_id)
                raise JobTimedOut(limit) from None


def _flat_pixels(job: Job) -> int | None:
    """The pixel count of a flat image, from the description the job has (read once)."""
    image = job.image
    if image is None or image.get("kind") != "flat":
        return None
    return int(image["width"]) * int(image["height"])
