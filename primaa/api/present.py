"""Domain values as JSON for the API: times in ISO 8601, never a token."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any

from primaa.jobs.model import Delivery, DeliveryRecord, Job, JobStatus


def iso(timestamp: float | None) -> datetime.datetime | None:
    """A moment the JSON encoder writes in ISO 8601 (:mod:`primaa.fastjson`): formatting
    it here took 5 % of a ``GET /jobs/{id}`` in the profile."""
    if timestamp is None:
        return None
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC)


def present_callback(deliveries: Sequence[Delivery | DeliveryRecord]) -> dict[str, Any] | None:
    """The latest delivery of a job (a redelivery supersedes the first)."""
    if not deliveries:
        return None
    delivery = max(deliveries, key=lambda d: d.created_at)
    return {
        "url": delivery.url,
        "delivery_id": delivery.delivery_id,
        "state": str(delivery.status),
        "next_attempt_at": iso(delivery.next_attempt_at) if delivery.status == "Pending" else None,
        "attempts": [
            {
                "at": iso(a.at),
                "status_code": a.status_code,
                "error": a.error,
                "duration": round(a.duration, 4),
            }
            for a in delivery.attempts
        ],
    }


def present_job(
    job: Job, deliveries: Sequence[Delivery | DeliveryRecord] | None = None
) -> dict[str, Any]:
    base = f"/jobs/{job.job_id}"
    body: dict[str, Any] = {
        "job_id": job.job_id,
        "status": str(job.status),
        "algorithm_name": job.algorithm,
        "parameters": dict(job.parameters),
        "image_url": job.image_url,
        "image": dict(job.image) if job.image is not None else None,
        "progress_percent": job.progress_percent,
        # The name of earlier versions, kept for the clients that read it.
        "progress": job.progress_percent,
        "attempts": job.attempts,
        "error": job.error,
        "cancel_requested": job.cancel_requested,
        "timeout": job.timeout,
        "created_at": iso(job.created_at),
        "updated_at": iso(job.updated_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "links": {"self": base, "result": f"{base}/result", "cancel": f"{base}/cancel"},
    }
    if deliveries is not None:
        body["callback"] = present_callback(deliveries)
    return body


def legacy_status(job_id: str, status: JobStatus, error: str | None) -> dict[str, Any]:
    return {"code": 200, "job_id": job_id, "status": str(status), "error": error}
