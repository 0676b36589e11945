"""The job manager: what clients can do with jobs (the API's one door into the core).

Submit, read, list, fetch a result, cancel, and ask for a callback again. The
running of jobs is the dispatcher's (:mod:`primaa.jobs.dispatcher`); the manager
only reads what it needs from it: a running job's live progress, and where to
send a cancel request.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import marshmallow
import structlog

from primaa.jobs.admission import Admission
from primaa.jobs.errors import (
    CannotDelete,
    CannotRedeliver,
    InvalidParameters,
    InvalidRequest,
    JobError,
    JobNotFound,
    ResultNotReady,
    ResultUnavailable,
    UnknownAlgorithm,
    schema_messages,
)
from primaa.jobs.images import JobImages
from primaa.jobs.large_results import LargeResults, ResultDocument
from primaa.jobs.model import Delivery, DeliveryRecord, Job, JobState, JobStatus, new_id
from primaa.jobs.outcomes import Outcomes
from primaa.jobs.ports import ImageSource, Notifier
from primaa.jobs.running import RunningJobs
from primaa.jobs.storage import JobPage, JobStore, StaleJob
from primaa.plugins.algorithm import AnyAlgorithm
from primaa.plugins.registry import AlgorithmRegistry
from primaa.results.feature import failure_feature

log = structlog.get_logger(__name__)


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
    #: The service's address as the client reached it (``scheme://host``), for links.
    service_url: str | None = None


class JobManager:
    def __init__(
        self,
        *,
        store: JobStore,
        registry: AlgorithmRegistry,
        admission: Admission,
        running: RunningJobs,
        outcomes: Outcomes,
        notifier: Notifier,
        wake_dispatcher: Callable[[], None],
        max_job_timeout: float,
        check_url: Callable[[str], object] | None = None,
        sources: ImageSource | None = None,
        images: JobImages,
        results: LargeResults,
        clock: Callable[[], float],
    ) -> None:
        """``check_url`` refuses callback URLs (and image URLs without ``sources``),
        raising ``ValueError``; ``sources`` checks image URLs, ``file://`` included."""
        self.store = store
        self.registry = registry
        self._admission = admission
        self._running = running
        self._outcomes = outcomes
        self._notifier = notifier
        self._wake_dispatcher = wake_dispatcher
        self._max_job_timeout = max_job_timeout
        self._check_url = check_url
        self._sources = sources
        self._images = images
        self._results = results
        self._clock = clock
        #: One parameter schema per algorithm: building a marshmallow schema costs three
        #: times as much as loading a submission's parameters with it.
        self._parameter_schemas: dict[str, marshmallow.Schema] = {}

    @property
    def draining(self) -> bool:
        """True once the service began to drain: no new submissions, no new claims."""
        return self._admission.closed

    def algorithm(self, name: str) -> AnyAlgorithm:
        algorithm = self.registry.get(name)
        if algorithm is None:
            raise UnknownAlgorithm(name, self.registry.names())
        return algorithm

    async def submit(self, request: JobRequest, *, client_id: str | None = None) -> Job:
        self._admission.check_open()
        algorithm = self.algorithm(request.algorithm)
        try:
            parameters = self._parameter_schema(algorithm).load(dict(request.parameters))
        except marshmallow.ValidationError as exc:
            raise InvalidParameters(algorithm.name, schema_messages(exc)) from None
        if request.timeout is not None and request.timeout > self._max_job_timeout:
            raise InvalidRequest(
                "timeout", f"must not exceed {self._max_job_timeout:g} s on this server"
            )
        try:
            if request.image_url is not None:
                if self._sources is not None:
                    await self._sources.check(request.image_url)
                elif self._check_url is not None:
                    self._check_url(request.image_url)
        except ValueError as exc:
            raise InvalidRequest("image_url", str(exc)) from None
        if request.callback_url is not None and self._check_url is not None:
            try:
                self._check_url(request.callback_url)
            except ValueError as exc:
                raise InvalidRequest("callback_url", str(exc)) from None
        now = self._clock()
        job = Job(
            job_id=new_id(),
            algorithm=algorithm.name,
            parameters=parameters,
            image_url=request.image_url,
            image_path=str(request.image_path) if request.image_path else None,
            callback_url=request.callback_url,
            callback_token=request.callback_token,
            client_id=client_id,
            service_url=request.service_url,
            timeout=request.timeout,
            created_at=now,
            updated_at=now,
        )
        async with self._admission.admit():
            await self.store.create(job)
        self._wake_dispatcher()
        log.info("job_submitted", job_id=job.job_id, algorithm=job.algorithm)
        return job

    def _parameter_schema(self, algorithm: AnyAlgorithm) -> marshmallow.Schema:
        schema = self._parameter_schemas.get(algorithm.name)
        if schema is None:
            schema = self._parameter_schemas[algorithm.name] = algorithm.Parameters()
        return schema

    async def get(self, job_id: str, *, client_id: str | None = None) -> Job:
        return self._with_live_progress(_visible(await self.store.get(job_id), job_id, client_id))

    async def get_with_deliveries(
        self, job_id: str, *, client_id: str | None = None
    ) -> tuple[Job, builtins.list[DeliveryRecord]]:
        """The job and its callback deliveries (their records), in one read of the store."""
        found = await self.store.get_with_deliveries(job_id)
        job, deliveries = found if found is not None else (None, [])
        return self._with_live_progress(_visible(job, job_id, client_id)), deliveries

    def _with_live_progress(self, job: Job) -> Job:
        """A job running here reports its progress at once; the store has it a moment later."""
        running = self._running.get(job.job_id)
        if running is not None and job.status is JobStatus.RUNNING:
            job = job.evolve(progress_percent=max(job.progress_percent, running.progress_percent))
        return job

    async def state(self, job_id: str, *, client_id: str | None = None) -> JobState:
        """Status and error alone (the original API's poll), without reading the whole job."""
        return _visible(await self.store.state(job_id), job_id, client_id)

    async def list(
        self,
        *,
        status: JobStatus | None = None,
        algorithm: str | None = None,
        client_id: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> JobPage:
        return await self.store.list(
            status=status, algorithm=algorithm, client_id=client_id, cursor=cursor, limit=limit
        )

    async def result(self, job_id: str, *, client_id: str | None = None) -> Mapping[str, Any]:
        """The whole result Feature (read from its file, in a thread, when it is large)."""
        stored = await self._stored_result(job_id, client_id)
        try:
            return await self._results.load(stored)
        except FileNotFoundError:
            raise await self._missing(job_id, client_id) from None

    async def result_document(self, job_id: str, *, client_id: str | None = None) -> ResultDocument:
        """The result as it is stored, for the API to stream: the Feature, or its gzip file."""
        stored = await self._stored_result(job_id, client_id)
        try:
            return await self._results.document(stored)
        except FileNotFoundError:
            raise await self._missing(job_id, client_id) from None

    async def _stored_result(self, job_id: str, client_id: str | None) -> Mapping[str, Any]:
        job = await self.get(job_id, client_id=client_id)
        if job.status is not JobStatus.COMPLETED:
            raise ResultNotReady(job_id, job.status)
        result = await self.store.get_result(job_id)
        if result is None:
            raise ResultNotReady(job_id, job.status)
        return result

    async def _missing(self, job_id: str, client_id: str | None) -> JobError:
        """A result file that is not there: its job was deleted meanwhile, or this server
        does not share the ``data_dir`` of the one that wrote it."""
        if await self.store.state(job_id) is None:
            return JobNotFound(job_id)
        log.error("job_result_file_missing", job_id=job_id)
        return ResultUnavailable(job_id)

    async def delete(self, job_id: str, *, client_id: str | None = None) -> None:
        """Remove a finished job: its row, result, callbacks, result file and kept image."""
        job = await self.get(job_id, client_id=client_id)
        if not job.status.is_terminal:
            raise CannotDelete(job_id, job.status)
        try:
            deleted = await self.store.delete(job_id)
        except StaleJob:
            raise CannotDelete(job_id, job.status) from None
        if deleted is None:
            raise JobNotFound(job_id)
        if deleted.result is not None:
            await self._results.remove(deleted.result)
        self._images.forget(job)
        log.info("job_deleted", job_id=job_id)

    async def image_path(self, job_id: str, *, client_id: str | None = None) -> Path | None:
        """The local file of a job's image, for the viewer; ``None`` when there is none here.

        The one door to a job's pixels: a job another client owns is not found. A
        slide on shared storage is read where it is, as long as its root allows it.
        """
        job = await self.get(job_id, client_id=client_id)
        if job.image_url is not None and self._sources is not None:
            in_place = await self._sources.in_place(job.image_url)
            if in_place is not None:
                return in_place
        return self._images.path_of(job)

    async def redeliver(self, job_id: str, *, client_id: str | None = None) -> Delivery:
        """Queue the final job's callback again, as a new message with a new delivery id.

        Receivers de-duplicate on ``webhook-id``; a redelivery is asked for because
        the first message was lost or mishandled, so it must not be dropped as a
        duplicate. The payload is the one sent first (the job's final Feature). An
        earlier delivery still retrying keeps its own schedule.
        """
        job = await self.get(job_id, client_id=client_id)
        if not job.status.is_terminal:
            raise CannotRedeliver(job_id, f"is {job.status}; only a finished job calls back")
        if not job.callback_url:
            raise CannotRedeliver(job_id, "has no callback URL")
        earlier = await self.store.deliveries_for(job_id)
        if earlier:
            payload = min(earlier, key=lambda d: d.created_at).payload
        elif job.status is JobStatus.COMPLETED:
            stored = await self.store.get_result(job_id)
            payload = self._results.callback_of(job, stored) if stored else failure_feature(job)
        else:
            payload = failure_feature(job)
        delivery = self._outcomes.delivery(job, payload)
        await self.store.add_delivery(delivery)
        self._notifier.wake()
        log.info("job_redelivery", job_id=job_id, delivery_id=delivery.delivery_id)
        return delivery

    async def cancel(self, job_id: str, *, client_id: str | None = None) -> Job:
        """Cancel at once when Pending; when Running, stop at the next progress report
        (the executor kills a worker that has not stopped within its grace)."""
        job = await self.get(job_id, client_id=client_id)
        if job.status is JobStatus.PENDING:
            with contextlib.suppress(StaleJob):
                return await self._outcomes.finish(
                    job, JobStatus.CANCELLED, expected=JobStatus.PENDING, error="cancelled"
                )
            job = await self.get(job_id, client_id=client_id)
        if job.status is JobStatus.RUNNING:
            job = await self.store.request_cancel(job_id) or job
            running = self._running.get(job_id)
            if running is not None:
                running.cancel()
        return job


_ClientOwned = TypeVar("_ClientOwned", Job, JobState)


def _visible(found: _ClientOwned | None, job_id: str, client_id: str | None) -> _ClientOwned:
    """What was read of a job, if the caller may see it: another client's job is not found."""
    if found is None or (client_id is not None and found.client_id != client_id):
        raise JobNotFound(job_id)
    return found
