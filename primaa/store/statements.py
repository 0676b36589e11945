"""The SQL store's statements, built once: each call only binds parameters and finds the
statement compiled (SQLAlchemy's cache; on SQLite, the writer's own, by identity).

Every state change is a single ``UPDATE ... WHERE status = <expected>`` whose row
count (or ``RETURNING``) tells whether the caller won.
"""

from __future__ import annotations

import functools
from typing import Any, Final

import sqlalchemy as sa

from primaa.jobs.model import DeliveryStatus, JobStatus
from primaa.store.common import EXPIRED_ERROR
from primaa.store.rows import STATE_COLUMNS
from primaa.store.tables import deliveries, delivery_attempts, jobs, results

_PENDING: Final = JobStatus.PENDING.value

# Built once: a fresh ``table.insert()`` per call costs SQLAlchemy a cache key each
# time (65-95 us of a job's 4 ms of service CPU, per insert).
INSERT_JOB: Final = jobs.insert()
INSERT_RESULT: Final = results.insert()
INSERT_DELIVERY: Final = deliveries.insert()
INSERT_ATTEMPT: Final = delivery_attempts.insert()
_RUNNING: Final = JobStatus.RUNNING.value

GET_JOB: Final = sa.select(jobs).where(jobs.c.job_id == sa.bindparam("job_id"))
#: Its columns in the order :func:`~primaa.store.rows.state_of` reads them.
GET_STATE: Final = sa.select(*(jobs.c[name] for name in STATE_COLUMNS)).where(
    jobs.c.job_id == sa.bindparam("job_id")
)
GET_RESULT: Final = sa.select(results.c.geojson).where(results.c.job_id == sa.bindparam("job_id"))
#: Deliveries, their attempts and the result go with the job (``ON DELETE CASCADE``).
DELETE_JOB: Final = jobs.delete().where(
    jobs.c.job_id == sa.bindparam("job_id"),
    jobs.c.status.notin_([_PENDING, _RUNNING]),
)
JOB_EXISTS: Final = sa.select(jobs.c.job_id).where(jobs.c.job_id == sa.bindparam("job_id"))
COUNT: Final = sa.select(jobs.c.algorithm, jobs.c.status, sa.func.count()).group_by(
    jobs.c.algorithm, jobs.c.status
)

SET_PROGRESS: Final = (
    jobs.update()
    .where(jobs.c.job_id == sa.bindparam("id"), jobs.c.status == _RUNNING)
    .values(progress_percent=sa.bindparam("new_progress"))
)
SET_IMAGE: Final = (
    jobs.update()
    .where(jobs.c.job_id == sa.bindparam("id"), jobs.c.status == _RUNNING)
    .values(image=sa.bindparam("new_image"))
)
RENEW: Final = (
    jobs.update()
    .where(
        jobs.c.job_id.in_(sa.bindparam("ids", expanding=True)),
        jobs.c.status == _RUNNING,
        jobs.c.lease_owner == sa.bindparam("holder"),
    )
    .values(lease_expires_at=sa.bindparam("expires"))
)
#: Everything a transition may change; ``parameters`` and ``job_id`` are fixed at creation,
#: ``image`` is written by :data:`SET_IMAGE` alone.
FINISH_COLUMNS: Final = tuple(
    c.name
    for c in jobs.columns
    if c.name not in {"job_id", "parameters", "cancel_requested", "image"}
)
#: Binds ``new_<column>`` for each of :data:`FINISH_COLUMNS`, ``id``, ``expected``, ``cancel``
#: and ``holder`` (the lease owner it must still have, or ``None``).
FINISH: Final = (
    jobs.update()
    .where(
        jobs.c.job_id == sa.bindparam("id"),
        jobs.c.status == sa.bindparam("expected"),
        # Fenced by the lease: only its holder may end a Running job.
        sa.or_(
            sa.bindparam("holder", type_=sa.String).is_(None),
            jobs.c.lease_owner == sa.bindparam("holder", type_=sa.String),
        ),
    )
    .values(
        {name: sa.bindparam(f"new_{name}") for name in FINISH_COLUMNS}
        # A cancel request that lands while the job is being finished is kept.
        | {"cancel_requested": sa.or_(jobs.c.cancel_requested, sa.bindparam("cancel"))}
    )
)
CANCEL: Final = (
    jobs.update()
    .where(jobs.c.job_id == sa.bindparam("id"), jobs.c.status.in_([_PENDING, _RUNNING]))
    .values(
        status=sa.case((jobs.c.status == _PENDING, JobStatus.CANCELLED.value), else_=jobs.c.status),
        finished_at=sa.case(
            (jobs.c.status == _PENDING, sa.bindparam("now")), else_=jobs.c.finished_at
        ),
        cancel_requested=sa.case(
            (jobs.c.status == _RUNNING, sa.true()), else_=jobs.c.cancel_requested
        ),
        updated_at=sa.bindparam("now"),
    )
    .returning(*jobs.columns)
)

_EXPIRED: Final = sa.and_(jobs.c.status == _RUNNING, jobs.c.lease_expires_at < sa.bindparam("now"))
_LEASE_CLEARED: Final[dict[str, Any]] = {
    "updated_at": sa.bindparam("stamp"),
    "lease_owner": None,
    "lease_expires_at": None,
}
_ERROR_HEAD, _ERROR_TAIL = EXPIRED_ERROR.split("{}")
REQUEUE_CANCEL: Final = (
    jobs.update()
    .where(_EXPIRED, jobs.c.cancel_requested == sa.true())
    .values(status=JobStatus.CANCELLED.value, finished_at=sa.bindparam("stamp"), **_LEASE_CLEARED)
    .returning(*jobs.columns)
)
REQUEUE_FAIL: Final = (
    jobs.update()
    .where(_EXPIRED, jobs.c.attempts >= sa.bindparam("max_attempts"))
    .values(
        status=JobStatus.FAILED.value,
        finished_at=sa.bindparam("stamp"),
        error=sa.literal(_ERROR_HEAD) + sa.cast(jobs.c.attempts, sa.String) + _ERROR_TAIL,
        **_LEASE_CLEARED,
    )
    .returning(*jobs.columns)
)
REQUEUE_RETRY: Final = (
    jobs.update()
    .where(_EXPIRED)
    .values(status=_PENDING, progress_percent=0.0, **_LEASE_CLEARED)
    .returning(jobs.c.job_id)
)


def list_jobs(
    *,
    status: str | None,
    algorithm: str | None,
    client_id: str | None,
    after: tuple[float, str] | None,
    limit: int,
) -> tuple[sa.Select[Any], dict[str, Any]]:
    """Jobs newest first, filtered, after the (created_at, job_id) of a paging cursor:
    the statement (one per set of filters, built once) and its parameters."""
    params: dict[str, Any] = {"limit": limit}
    if status is not None:
        params["status"] = status
    if algorithm is not None:
        params["algorithm"] = algorithm
    if client_id is not None:
        params["client_id"] = client_id
    if after is not None:
        params["after_created"], params["after_id"] = after
    return _list_jobs(frozenset(params)), params


@functools.cache
def _list_jobs(filters: frozenset[str]) -> sa.Select[Any]:
    query = sa.select(jobs)
    for name in ("status", "algorithm", "client_id"):
        if name in filters:
            query = query.where(jobs.c[name] == sa.bindparam(name))
    if "after_id" in filters:
        created_at = sa.bindparam("after_created", type_=sa.Double)
        query = query.where(
            sa.or_(
                jobs.c.created_at < created_at,
                sa.and_(jobs.c.created_at == created_at, jobs.c.job_id < sa.bindparam("after_id")),
            )
        )
    return query.order_by(jobs.c.created_at.desc(), jobs.c.job_id.desc()).limit(
        sa.bindparam("limit")
    )


_ATTEMPT_COLUMNS: Final = (
    delivery_attempts.c.at.label("attempt_at"),
    delivery_attempts.c.status_code.label("attempt_status_code"),
    delivery_attempts.c.error.label("attempt_error"),
    delivery_attempts.c.duration.label("attempt_duration"),
)
_ATTEMPTS_OF_DELIVERY: Final = delivery_attempts.c.delivery_id == deliveries.c.delivery_id
_ATTEMPT_ORDER: Final = (deliveries.c.delivery_id, delivery_attempts.c.attempt_id)


def deliveries_with_attempts(where: sa.ColumnElement[bool], *order: Any) -> sa.Select[Any]:
    """Deliveries and their attempts in one query: a delivery's columns, then one
    attempt's as ``attempt_*`` (NULLs for a delivery without any), read by
    :func:`~primaa.store.rows.deliveries_from_rows`."""
    return (
        sa.select(deliveries, *_ATTEMPT_COLUMNS)
        .select_from(deliveries.outerjoin(delivery_attempts, _ATTEMPTS_OF_DELIVERY))
        .where(where)
        .order_by(*order, *_ATTEMPT_ORDER)
    )


#: The deliveries of one job, for ``GET /jobs/{id}``.
DELIVERIES_FOR_JOB: Final = deliveries_with_attempts(
    deliveries.c.job_id == sa.bindparam("job_id"), deliveries.c.created_at
)
#: A job, its deliveries and their attempts in one query, for ``GET /jobs/{id}``: the
#: job's columns, then what is shown of a delivery as ``delivery_*`` (NULLs for a job
#: without any; not its payload and token), then an attempt's; read, and put in order,
#: by :func:`~primaa.store.rows.job_with_delivery_records`. Unordered: a temporary
#: B-tree for the order took a tenth of the query on SQLite, for a row or two.
JOB_WITH_DELIVERIES: Final = (
    sa.select(
        jobs,
        *(
            deliveries.c[name].label(f"delivery_{name}")
            for name in ("delivery_id", "url", "status", "next_attempt_at", "created_at")
        ),
        delivery_attempts.c.attempt_id,
        *_ATTEMPT_COLUMNS,
    )
    # Joined one after the other: a nested join (jobs to deliveries-with-attempts)
    # is materialised whole by SQLite, every delivery of every job, on each read.
    .select_from(
        jobs.outerjoin(deliveries, deliveries.c.job_id == jobs.c.job_id).outerjoin(
            delivery_attempts, _ATTEMPTS_OF_DELIVERY
        )
    )
    .where(jobs.c.job_id == sa.bindparam("job_id"))
)
_DUE_ORDER: Final = (deliveries.c.next_attempt_at, deliveries.c.created_at)
#: The ``limit`` deliveries due first, for the outbox.
DUE: Final = deliveries_with_attempts(
    deliveries.c.delivery_id.in_(
        sa.select(deliveries.c.delivery_id)
        .where(
            deliveries.c.status == DeliveryStatus.PENDING.value,
            deliveries.c.next_attempt_at <= sa.bindparam("now"),
        )
        .order_by(*_DUE_ORDER, deliveries.c.delivery_id)
        .limit(sa.bindparam("limit"))
        .scalar_subquery()
    ),
    *_DUE_ORDER,
)
#: Appends nothing itself: sets a delivery's status and next attempt after an attempt,
#: and gives its claim up. With ``holder`` bound, only while that process holds the claim.
RECORD: Final = (
    deliveries.update()
    .where(
        deliveries.c.delivery_id == sa.bindparam("id"),
        sa.or_(
            sa.bindparam("holder", type_=sa.String).is_(None),
            deliveries.c.claimed_by == sa.bindparam("holder", type_=sa.String),
        ),
    )
    .values(
        status=sa.bindparam("new_status"),
        next_attempt_at=sa.func.coalesce(
            sa.bindparam("next", type_=sa.Double), deliveries.c.next_attempt_at
        ),
        claimed_by=None,
        claim_expires_at=None,
    )
)
DELIVERY_EXISTS: Final = sa.select(deliveries.c.delivery_id).where(
    deliveries.c.delivery_id == sa.bindparam("id")
)
#: Gives claims back unsent (a stopping outbox): those of ``ids`` that ``holder`` holds.
RELEASE: Final = (
    deliveries.update()
    .where(
        deliveries.c.delivery_id.in_(sa.bindparam("ids", expanding=True)),
        deliveries.c.claimed_by == sa.bindparam("holder"),
    )
    .values(claimed_by=None, claim_expires_at=None)
)
#: Every claim, at the start of a store one process owns: they belong to a previous run.
RELEASE_ALL: Final = (
    deliveries.update()
    .where(deliveries.c.claimed_by.is_not(None))
    .values(claimed_by=None, claim_expires_at=None)
)
#: The deliveries just claimed, with their attempts.
CLAIMED: Final = deliveries_with_attempts(
    deliveries.c.delivery_id.in_(sa.bindparam("ids", expanding=True)), *_DUE_ORDER
)
