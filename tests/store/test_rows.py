"""Rows are decoded by column name, whatever the order of the result's columns."""

from __future__ import annotations

import json

import pytest

from primaa.jobs.model import Delivery, DeliveryAttempt, DeliveryStatus, Job, JobState, JobStatus
from primaa.store.rows import (
    STATE_COLUMNS,
    Rows,
    deliveries_from_rows,
    delivery_row,
    first_job,
    job_row,
    jobs_from_rows,
    state_of,
)

JOB = Job(
    job_id="job-1",
    algorithm="a",
    parameters={"k": [1, 2]},
    status=JobStatus.RUNNING,
    client_id="client",
    progress_percent=40.0,
    attempts=1,
    created_at=1.0,
    updated_at=2.0,
    started_at=2.0,
    lease_owner="me",
    lease_expires_at=30.0,
    cancel_requested=True,
)


def _reversed(row: dict[str, object]) -> Rows:
    keys = tuple(reversed(row))
    return Rows(keys, [tuple(row[key] for key in keys)])


def test_a_job_is_read_by_column_name() -> None:
    row = job_row(JOB) | {"status": JOB.status.value}
    assert first_job(_reversed(row)) == JOB
    assert jobs_from_rows(_reversed(row)) == [JOB]


def test_the_readers_text_json_and_integer_booleans_decode_alike() -> None:
    row = job_row(JOB) | {
        "status": JOB.status.value,
        "parameters": json.dumps(JOB.parameters),
        "cancel_requested": 1,
    }
    assert first_job(_reversed(row)) == JOB


def test_a_state_from_a_row_of_its_three_columns() -> None:
    assert STATE_COLUMNS == ("status", "error", "client_id")
    assert state_of(("Failed", None, "client")) == JobState(JobStatus.FAILED, None, "client")
    assert state_of(None) is None


def test_a_missing_column_is_an_error_not_a_shifted_field() -> None:
    row = job_row(JOB) | {"status": JOB.status.value}
    del row["timeout"]
    with pytest.raises(KeyError, match="timeout"):
        first_job(_reversed(row))


def test_deliveries_with_their_attempts_by_column_name() -> None:
    delivery = Delivery(
        delivery_id="d-1",
        job_id="job-1",
        url="http://receiver/",
        payload={"x": 1},
        token="t",
        status=DeliveryStatus.PENDING,
        next_attempt_at=5.0,
        created_at=3.0,
    )
    attempts = [
        DeliveryAttempt(at=4.0, status_code=500, error=None, duration=0.1),
        DeliveryAttempt(at=4.5, status_code=None, error="refused", duration=0.2),
    ]
    base = delivery_row(delivery) | {"status": delivery.status.value}
    rows = [
        base
        | {
            "attempt_at": a.at,
            "attempt_status_code": a.status_code,
            "attempt_error": a.error,
            "attempt_duration": a.duration,
        }
        for a in attempts
    ]
    keys = tuple(reversed(rows[0]))
    decoded = deliveries_from_rows(Rows(keys, [tuple(row[k] for k in keys) for row in rows]))
    assert decoded == [delivery.evolve(attempts=tuple(attempts))]
