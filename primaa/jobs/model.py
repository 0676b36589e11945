"""The job as a value: its states, the transitions between them, and its deliveries.

Jobs are frozen; every change is a new value made with :meth:`Job.evolve`, and
every state change goes through :func:`check_transition` so that no layer can
invent a path the state machine does not allow.
"""

from __future__ import annotations

import dataclasses
import enum
import time
import uuid
from collections.abc import Mapping
from typing import Any, NamedTuple


class JobStatus(enum.StrEnum):
    """Where a job is in its life. The spellings are the original API's."""

    #: Accepted and stored, waiting for a free worker (also after a retry).
    PENDING = "Pending"
    #: Claimed by a dispatcher that holds a lease on it.
    RUNNING = "Running"
    #: Finished with a result. Terminal.
    COMPLETED = "Completed"
    #: Finished with an error. Terminal.
    FAILED = "Failed"
    #: Stopped on a client's request. Terminal.
    CANCELLED = "Cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})

#: Every allowed transition, by name. ``Running -> Pending`` is a retry after a
#: lost lease or a dead worker; terminal states have no way out.
TRANSITIONS: Mapping[tuple[JobStatus, JobStatus], str] = {
    (JobStatus.PENDING, JobStatus.RUNNING): "claim",
    (JobStatus.PENDING, JobStatus.CANCELLED): "cancel",
    (JobStatus.PENDING, JobStatus.FAILED): "fail",
    (JobStatus.RUNNING, JobStatus.COMPLETED): "complete",
    (JobStatus.RUNNING, JobStatus.FAILED): "fail",
    (JobStatus.RUNNING, JobStatus.CANCELLED): "cancel",
    (JobStatus.RUNNING, JobStatus.PENDING): "retry",
}


class InvalidTransition(Exception):
    """A state change the state machine does not allow."""

    def __init__(self, current: JobStatus, target: JobStatus) -> None:
        super().__init__(f"cannot move a job from {current} to {target}")
        self.current = current
        self.target = target


def check_transition(current: JobStatus, target: JobStatus) -> str:
    """Return the transition's name, or raise :class:`InvalidTransition`."""
    try:
        return TRANSITIONS[(current, target)]
    except KeyError:
        raise InvalidTransition(current, target) from None


def new_id() -> str:
    return str(uuid.uuid4())


@dataclasses.dataclass(frozen=True, slots=True)
class Job:
    """One request to run one algorithm on one image."""

    job_id: str
    algorithm: str
    parameters: Mapping[str, Any]
    status: JobStatus = JobStatus.PENDING
    image_url: str | None = None
    #: Path of the uploaded or spooled image, relative to the data dir's spool.
    image_path: str | None = None
    callback_url: str | None = None
    callback_token: str | None = dataclasses.field(default=None, repr=False)
    #: The API key (hash) that created the job; ``None`` when auth is off.
    client_id: str | None = None
    #: The service's address as the submitting client reached it (``scheme://host``), for
    #: links in the job's callback when no ``public_url`` is configured.
    service_url: str | None = None
    #: How far the running algorithm got, 0 to 100 (algorithms report fractions, 0 to 1).
    progress_percent: float = 0.0
    attempts: int = 0
    error: str | None = None
    created_at: float = dataclasses.field(default_factory=time.time)
    updated_at: float = dataclasses.field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    #: Per-job time limit in seconds; ``None`` uses the algorithm's default.
    timeout: float | None = None
    #: Who holds the job while it is Running, and until when.
    lease_owner: str | None = None
    lease_expires_at: float | None = None
    #: A client asked to cancel this Running job; it stops at its next progress report.
    cancel_requested: bool = False
    #: What the image is (size, µm per pixel, levels, format), written when a run first
    #: opens it; ``None`` before. A JSON object: the jobs core never reads inside it.
    image: Mapping[str, Any] | None = None

    def evolve(self, **changes: Any) -> Job:
        return dataclasses.replace(self, **changes)

    def moved_to(self, target: JobStatus, now: float | None = None, **changes: Any) -> Job:
        """The job after a checked transition to ``target``."""
        check_transition(self.status, target)
        stamp = time.time() if now is None else now
        extra: dict[str, Any] = {"status": target, "updated_at": stamp}
        if target is JobStatus.RUNNING:
            extra.update(started_at=stamp, attempts=self.attempts + 1, progress_percent=0.0)
        if target.is_terminal:
            extra.update(finished_at=stamp, lease_owner=None, lease_expires_at=None)
            if target is JobStatus.COMPLETED:
                extra["progress_percent"] = 100.0
        if target is JobStatus.PENDING:
            extra.update(lease_owner=None, lease_expires_at=None, progress_percent=0.0)
        extra.update(changes)
        return dataclasses.replace(self, **extra)


class JobState(NamedTuple):
    """A job's status, error and client id alone: what the original API's status poll
    shows (and checks), read without the rest of the row since clients poll it most."""

    status: JobStatus
    error: str | None
    client_id: str | None


class DeliveryStatus(enum.StrEnum):
    """Where a callback delivery is."""

    #: Waiting for its next attempt (the first, or a retry after a failure).
    PENDING = "Pending"
    #: The receiver answered 2xx.
    DELIVERED = "Delivered"
    #: Retries exhausted, or the receiver answered 410 Gone.
    FAILED = "Failed"


@dataclasses.dataclass(frozen=True, slots=True)
class DeliveryAttempt:
    at: float
    status_code: int | None
    error: str | None
    duration: float


@dataclasses.dataclass(frozen=True, slots=True)
class Delivery:
    """One callback to send for one finished job (the outbox row).

    ``delivery_id`` stays the same across retries so receivers can de-duplicate.
    """

    delivery_id: str
    job_id: str
    url: str
    payload: Mapping[str, Any]
    token: str | None = dataclasses.field(default=None, repr=False)
    status: DeliveryStatus = DeliveryStatus.PENDING
    next_attempt_at: float = dataclasses.field(default_factory=time.time)
    attempts: tuple[DeliveryAttempt, ...] = ()
    created_at: float = dataclasses.field(default_factory=time.time)

    def evolve(self, **changes: Any) -> Delivery:
        return dataclasses.replace(self, **changes)

    def record(self) -> DeliveryRecord:
        """What a reader of the job is shown of this delivery."""
        return DeliveryRecord(
            self.delivery_id,
            self.url,
            self.status,
            self.next_attempt_at,
            self.attempts,
            self.created_at,
        )


@dataclasses.dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """A delivery as ``GET /jobs/{id}`` shows it: where it is and its attempts, without the
    payload and token it sends (a payload may be a whole result, read for nothing)."""

    delivery_id: str
    url: str
    status: DeliveryStatus
    next_attempt_at: float
    attempts: tuple[DeliveryAttempt, ...]
    created_at: float
