"""What the service returns, as typed values that keep every field it sent."""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping
from typing import Any

#: Statuses after which a job never changes again.
FINAL_STATUSES = frozenset({"Completed", "Failed", "Cancelled"})


def _time(value: Any) -> datetime.datetime | None:
    """An ISO 8601 time of the service as an aware datetime; ``None`` when absent."""
    if not isinstance(value, str) or not value:
        return None
    return datetime.datetime.fromisoformat(value)


@dataclasses.dataclass(frozen=True)
class Job:
    """A job as ``GET /jobs/{id}`` shows it.

    The service adds fields over time; ``raw`` holds the whole answer, so a field this
    class does not know yet is still readable (``job.raw["new_field"]``).
    """

    job_id: str
    status: str
    algorithm_name: str
    progress_percent: float
    attempts: int
    error: str | None
    parameters: Mapping[str, Any]
    image_url: str | None
    cancel_requested: bool
    timeout: float | None
    created_at: datetime.datetime | None
    updated_at: datetime.datetime | None
    started_at: datetime.datetime | None
    finished_at: datetime.datetime | None
    #: The latest callback delivery (``url``, ``delivery_id``, ``state``, ``attempts``), as
    #: sent; ``None`` without a callback URL, and in job lists, which leave it out.
    callback: Mapping[str, Any] | None
    raw: Mapping[str, Any] = dataclasses.field(repr=False, compare=False)
    #: What the image is once a run opened it (``format``, ``kind``, ``width``, ``height``,
    #: ``mpp`` in µm per pixel or ``None``, ``levels``, ``bytes``); ``None`` before.
    image: Mapping[str, Any] | None = None

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Job:
        return cls(
            job_id=str(body["job_id"]),
            status=str(body["status"]),
            algorithm_name=str(body.get("algorithm_name", "")),
            progress_percent=float(body.get("progress_percent") or 0.0),
            attempts=int(body.get("attempts") or 0),
            error=body.get("error"),
            parameters=dict(body.get("parameters") or {}),
            image_url=body.get("image_url"),
            cancel_requested=bool(body.get("cancel_requested", False)),
            timeout=body.get("timeout"),
            created_at=_time(body.get("created_at")),
            updated_at=_time(body.get("updated_at")),
            started_at=_time(body.get("started_at")),
            finished_at=_time(body.get("finished_at")),
            callback=body.get("callback"),
            raw=dict(body),
            image=body.get("image"),
        )

    @property
    def done(self) -> bool:
        """Final: Completed, Failed or Cancelled."""
        return self.status in FINAL_STATUSES

    @property
    def ok(self) -> bool:
        """Completed, so ``result()`` has a result."""
        return self.status == "Completed"
