"""The GeoJSON Feature a job produces: stored as its result and posted to its callback.

A failed job's callback is the same shape with ``geometry: null`` and
``properties.error``, so receivers parse one document type.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from primaa.jobs.model import Job
from primaa.plugins.algorithm import AlgorithmResult


def _base_properties(job: Job) -> dict[str, Any]:
    return {
        "job_id": job.job_id,
        "algorithm_name": job.algorithm,
        "image_url": job.image_url,
        "status": str(job.status),
    }


def result_feature(job: Job, result: AlgorithmResult) -> dict[str, Any]:
    """The Feature of a completed job."""
    return make_feature(_base_properties(job), result)


def make_feature(base_properties: dict[str, Any], result: AlgorithmResult) -> dict[str, Any]:
    """A result Feature with the given identifying properties (a job's, or a local file's)."""
    properties = dict(base_properties)
    properties.update(
        measurements=dict(result.measurements),
        object_type=result.object_type,
        classification=result.classification,
        object_measurements=(
            [dict(m) for m in result.object_measurements]
            if result.object_measurements is not None
            else None
        ),
    )
    return {"type": "Feature", "geometry": result.geometry, "properties": properties}


def failure_feature(job: Job) -> dict[str, Any]:
    """The Feature sent to the callback of a failed or cancelled job."""
    properties = _base_properties(job)
    properties["error"] = job.error
    return {"type": "Feature", "geometry": None, "properties": properties}


def summary_feature(feature: Mapping[str, Any]) -> dict[str, Any]:
    """A result Feature without its objects: ``geometry: null`` and the properties less
    ``object_measurements`` (one entry per object); the job-wide ``measurements`` stay."""
    properties = {
        key: value
        for key, value in (feature.get("properties") or {}).items()
        if key != "object_measurements"
    }
    return {"type": "Feature", "geometry": None, "properties": properties}
