"""Rows ↔ model objects for the SQL store: the rows it writes, and decoders that read
results by column name.

A decoder finds the columns it needs by name in the result's keys, once per
distinct set of keys, then reads each row by position: as fast as the positional
decoding it replaces, where a lookup by name per field (``RowMapping``) would
double the cost of reading a job's 20 columns. Results come from SQLAlchemy,
whose JSON columns are decoded, or from the SQLite status reader, which carries
JSON as text and booleans as integers; the decoders accept both.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
from collections.abc import Callable, Sequence
from typing import Any, Final, NamedTuple

from primaa.fastjson import dumps, loads
from primaa.jobs.model import (
    Delivery,
    DeliveryAttempt,
    DeliveryRecord,
    DeliveryStatus,
    Job,
    JobState,
    JobStatus,
)
from primaa.store.common import receiver_host
from primaa.store.sql_connection import ResultLike


class Rows(NamedTuple):
    """A result: its column names, and its rows with values in that order."""

    keys: tuple[str, ...]
    rows: Sequence[Sequence[Any]]

    @classmethod
    def of(cls, result: ResultLike) -> Rows:
        """All of a result."""
        return cls(tuple(result.keys()), result.all())


#: Status by stored value: a dict lookup is a tenth of the cost of calling the enum.
_STATUSES: Final = {status.value: status for status in JobStatus}

_JOB_FIELDS: Final = tuple(field.name for field in dataclasses.fields(Job))
if _JOB_FIELDS[2:4] != ("parameters", "status") or _JOB_FIELDS[-2:] != (
    "cancel_requested",
    "image",
):
    raise ImportError("_job_from_values needs parameters, status, cancel_requested, image there")
STATE_COLUMNS: Final = ("status", "error", "client_id")
_DELIVERY_COLUMNS: Final = (
    "delivery_id",
    "job_id",
    "url",
    "payload",
    "token",
    "status",
    "next_attempt_at",
    "created_at",
)
_ATTEMPT_COLUMNS: Final = ("attempt_at", "attempt_status_code", "attempt_error", "attempt_duration")
#: What a delivery's record shows, as :data:`~primaa.store.statements.JOB_WITH_DELIVERIES`
#: names it, and the order of its rows.
_RECORD_COLUMNS: Final = tuple(
    f"delivery_{name}" for name in ("delivery_id", "url", "status", "next_attempt_at", "created_at")
)
_RECORD_ORDER: Final = ("delivery_created_at", "delivery_delivery_id", "attempt_id")
_DELIVERY_STATUSES: Final = {status.value: status for status in DeliveryStatus}


@functools.cache
def _picker(
    names: tuple[str, ...], keys: tuple[str, ...]
) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
    """Takes the values of the columns ``names``, in that order, from a row with ``keys``."""
    missing = [name for name in names if name not in keys]
    if missing:
        raise KeyError(f"the rows lack the columns {missing}")
    return operator.itemgetter(*(keys.index(name) for name in names))


def json_text(value: Any) -> str:
    """JSON as the store writes it (JSON columns, results): the encoder of the answers,
    25x faster than json on a large result."""
    return dumps(value).decode()


def _json_value(value: Any) -> Any:
    return loads(value) if isinstance(value, str) else value


def _job_from_values(values: tuple[Any, ...]) -> Job:
    """A job from the values of its fields, in field order."""
    decoded = (
        values[0],
        values[1],
        _json_value(values[2]),
        _STATUSES[values[3]],
        *values[4:-2],
        bool(values[-2]),
        _json_value(values[-1]),
    )
    return Job(*decoded)


def jobs_from_rows(result: Rows) -> list[Job]:
    """Jobs from rows with every ``jobs`` column."""
    pick = _picker(_JOB_FIELDS, result.keys)
    return [_job_from_values(pick(row)) for row in result.rows]


def first_job(result: Rows) -> Job | None:
    """The job of the first row, if any."""
    if not result.rows:
        return None
    return _job_from_values(_picker(_JOB_FIELDS, result.keys)(result.rows[0]))


class _LastPickers:
    """The pickers of one decoder for the keys it last read, found again by identity: the
    status reader passes the same keys object on every read, and the lookup of
    :func:`_picker` hashes both tuples (a tenth of decoding a job with its deliveries)."""

    def __init__(self, *names: tuple[str, ...]) -> None:
        self._names = names
        #: The keys and their pickers, replaced as one value: a thread may decode too.
        self._last: tuple[tuple[str, ...], tuple[Callable[[Sequence[Any]], Any], ...]] = ((), ())

    def __call__(self, keys: tuple[str, ...]) -> tuple[Callable[[Sequence[Any]], Any], ...]:
        last = self._last
        if last[0] is not keys:
            last = self._last = (keys, tuple(_picker(names, keys) for names in self._names))
        return last[1]


def state_of(row: Sequence[Any] | None) -> JobState | None:
    """The job state of a row of ``STATE_COLUMNS`` in that order (a read of
    :data:`~primaa.store.statements.GET_STATE`), if there is one."""
    if row is None:
        return None
    return JobState(_STATUSES[row[0]], row[1], row[2])


def _with_attempts(
    rows: Sequence[Sequence[Any]],
    pick_delivery: Callable[[Sequence[Any]], Any],
    pick_attempt: Callable[[Sequence[Any]], Any],
) -> list[tuple[tuple[Any, ...], list[DeliveryAttempt]]]:
    """Each delivery's values (the first is its id) with its attempts, from rows of a
    delivery and one of its attempts each, in the rows' order; rows without one skipped."""
    found: dict[str, tuple[tuple[Any, ...], list[DeliveryAttempt]]] = {}
    for row in rows:
        delivery = pick_delivery(row)
        if delivery[0] is None:
            continue
        entry = found.get(delivery[0])
        if entry is None:
            entry = found[delivery[0]] = (delivery, [])
        at, status_code, error, duration = pick_attempt(row)
        if at is not None:
            entry[1].append(DeliveryAttempt(at, status_code, error, duration))
    return list(found.values())


def deliveries_from_rows(result: Rows) -> list[Delivery]:
    """Deliveries from rows of :func:`~primaa.store.statements.deliveries_with_attempts`
    (a delivery's columns and one of its attempts, ``attempt_*``), in the rows' order."""
    found = _with_attempts(
        result.rows,
        _picker(_DELIVERY_COLUMNS, result.keys),
        _picker(_ATTEMPT_COLUMNS, result.keys),
    )
    return [
        Delivery(
            delivery_id=delivery_id,
            job_id=job_id,
            url=url,
            payload=_json_value(payload),
            token=token,
            status=_DELIVERY_STATUSES[status],
            next_attempt_at=next_attempt_at,
            attempts=tuple(attempts),
            created_at=created_at,
        )
        for (
            delivery_id,
            job_id,
            url,
            payload,
            token,
            status,
            next_attempt_at,
            created_at,
        ), attempts in found
    ]


_record_pickers: Final = _LastPickers(_JOB_FIELDS, _RECORD_COLUMNS, _ATTEMPT_COLUMNS, _RECORD_ORDER)


def job_with_delivery_records(result: Rows) -> tuple[Job, list[DeliveryRecord]] | None:
    """A job and the records of its deliveries from rows of
    :data:`~primaa.store.statements.JOB_WITH_DELIVERIES`, if the job exists: deliveries
    by ``created_at`` then ``delivery_id``, attempts in the order they were made."""
    rows = result.rows
    if not rows:
        return None
    pick_job, pick_delivery, pick_attempt, pick_order = _record_pickers(result.keys)
    job = _job_from_values(pick_job(rows[0]))
    if len(rows) > 1:
        rows = sorted(rows, key=pick_order)
    found = _with_attempts(rows, pick_delivery, pick_attempt)
    return job, [
        DeliveryRecord(
            delivery_id, url, _DELIVERY_STATUSES[status], next_attempt_at, tuple(attempts), created
        )
        for (delivery_id, url, status, next_attempt_at, created), attempts in found
    ]


def job_row(job: Job) -> dict[str, Any]:
    """The ``jobs`` row of a job (also what the benchmarks bulk-insert)."""
    return {
        "job_id": job.job_id,
        "algorithm": job.algorithm,
        "parameters": job.parameters,
        "status": job.status.value,
        "image_url": job.image_url,
        "image_path": job.image_path,
        "callback_url": job.callback_url,
        "callback_token": job.callback_token,
        "client_id": job.client_id,
        "service_url": job.service_url,
        "progress_percent": job.progress_percent,
        "attempts": job.attempts,
        "error": job.error,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "timeout": job.timeout,
        "lease_owner": job.lease_owner,
        "lease_expires_at": job.lease_expires_at,
        "cancel_requested": job.cancel_requested,
        "image": job.image,
    }


def delivery_row(delivery: Delivery) -> dict[str, Any]:
    """The ``deliveries`` row of a delivery (its attempts live in their own table)."""
    return {
        "delivery_id": delivery.delivery_id,
        "job_id": delivery.job_id,
        "url": delivery.url,
        "token": delivery.token,
        "payload": delivery.payload,
        "status": delivery.status.value,
        "next_attempt_at": delivery.next_attempt_at,
        "created_at": delivery.created_at,
        "host": receiver_host(delivery.url),
    }


def attempt_row(delivery_id: str, attempt: DeliveryAttempt) -> dict[str, Any]:
    """The ``delivery_attempts`` row of one attempt."""
    return {
        "delivery_id": delivery_id,
        "at": attempt.at,
        "status_code": attempt.status_code,
        "error": attempt.error,
        "duration": attempt.duration,
    }
