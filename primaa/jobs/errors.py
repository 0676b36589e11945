"""Domain errors the API translates to HTTP; each message is safe to show a client."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import marshmallow

from primaa.jobs.model import JobStatus


def schema_messages(exc: marshmallow.ValidationError) -> dict[str, Any]:
    """A schema's error messages, always keyed by field (``_schema`` for whole-object errors)."""
    return exc.messages if isinstance(exc.messages, dict) else {"_schema": exc.messages}


class JobError(Exception):
    """Base of errors a client caused or can act on."""


class JobNotFound(JobError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job with id {job_id!r}")
        self.job_id = job_id


class UnknownAlgorithm(JobError):
    def __init__(self, name: str, available: Sequence[str]) -> None:
        super().__init__(f"unknown algorithm {name!r}; available: {', '.join(available) or 'none'}")
        self.name = name
        self.available = list(available)


class InvalidParameters(JobError):
    def __init__(self, algorithm: str, messages: Mapping[str, Any]) -> None:
        super().__init__(f"invalid parameters for {algorithm!r}")
        self.messages = dict(messages)


class InvalidRequest(JobError):
    """A field is wrong in a way its schema cannot see (URL refused, timeout too long)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class ResultNotReady(JobError):
    def __init__(self, job_id: str, status: JobStatus) -> None:
        message = {
            JobStatus.FAILED: "failed and has no result",
            JobStatus.CANCELLED: "was cancelled and has no result",
        }.get(status, f"is {status} and has no result yet")
        super().__init__(f"job {job_id} {message}")
        self.status = status


class CannotRedeliver(JobError):
    """A callback cannot be sent again: the job is not final or has no callback URL."""

    def __init__(self, job_id: str, reason: str) -> None:
        super().__init__(f"job {job_id} {reason}")
        self.job_id = job_id


class CannotDelete(JobError):
    """Only a finished job can be deleted: a running one would come back to write."""

    def __init__(self, job_id: str, status: JobStatus) -> None:
        super().__init__(f"job {job_id} is {status}; cancel it, then delete it once it has ended")
        self.job_id = job_id


class ResultUnavailable(JobError):
    """The store names a result file this server cannot read (``data_dir`` not shared)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"the result file of job {job_id} is not on this server's data_dir")
        self.job_id = job_id


class TooManyJobs(JobError):
    def __init__(self, limit: int, retry_after: int) -> None:
        super().__init__(f"{limit} jobs are already waiting or running; try again later")
        self.retry_after = retry_after


class ShuttingDown(JobError):
    """The service is draining before it stops: the client should retry (here or elsewhere)."""

    def __init__(self, retry_after: int) -> None:
        super().__init__("the service is shutting down and takes no new jobs; try again later")
        self.retry_after = retry_after


class StorageUnavailable(JobError):
    """The store (or the upload spool) cannot write: the disk is full or the database is
    read-only.

    Raised by the stores (the message names the cause); nothing was written, so the
    client may retry, and the service retries its own final writes.
    """

    def __init__(
        self, cause: str, *, full: bool, retry_after: int = 10, where: str = "the job store"
    ) -> None:
        super().__init__(f"{where} cannot write: {cause}; try again later")
        self.cause = cause
        self.full = full
        self.retry_after = retry_after
