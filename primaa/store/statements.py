"""The SQL store's statements, built once: each call only binds parameters and hits
SQLAlchemy's compiled cache.

Every state change is a single ``UPDATE ... WHERE status = <expected>`` whose row
count (or ``RETURNING``) tells whether the caller won.
"""

from __future__ import annotations

from typing import Any, Final

import sqlalchemy as sa

from primaa.jobs.model import DeliveryStatus, JobStatus
from primaa.store.common import EXPIRED_ERROR
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
GET_STATE: Final = sa.select(jobs.c.status, jobs.c.error, jobs.c.client_id).where(
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
) -> sa.Select[Any]:
    """Jobs newest first, filtered, after the (created_at, job_id) of a paging cursor."""
    query = sa.select(jobs)
    if status is not None:
        query = query.where(jobs.c.status == status)
    if algorithm is not None:
        query = query.where(jobs.c.algorithm == algorithm)
    if client_id is not None:
        query = query.where(jobs.c.client_id == client_id)
    if after is not None:
        created_at, job_id = after
        query = query.where(
            sa.or_(
                jobs.c.created_at < created_at,
                sa.and_(jobs.c.created_at == created_at, jobs.c.job_id < job_id),
            )
        )
    return query.order_by(jobs.c.created_at.desc(), jobs.c.job_id.desc()).limit(limit)


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
#: job's columns, then a delivery's as ``delivery_*`` (NULLs for a job without any),
#: then an attempt's; read by :func:`~primaa.store.rows.job_with_deliveries`.
JOB_WITH_DELIVERIES: Final = (
    sa.select(
        jobs,
        *(column.label(f"delivery_{column.name}") for column in deliveries.c),
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
    .order_by(deliveries.c.created_at, *_ATTEMPT_ORDER)
)
_DUE_ORDER: Final = (deliveries.c.next_attempt_at, deliveries.c.created_at)
_DELIVERY_PENDING: Final = DeliveryStatus.PENDING.value
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


def _due_delivery(table: sa.FromClause) -> sa.ColumnElement[bool]:
    """Pending, its next attempt due at ``now``, and not claimed by anyone (or no longer)."""
    now = sa.bindparam("now", type_=sa.Double)
    return sa.and_(
        table.c.status == _DELIVERY_PENDING,
        table.c.next_attempt_at <= now,
        sa.or_(table.c.claim_expires_at.is_(None), table.c.claim_expires_at < now),
    )


def _due_order(table: sa.FromClause) -> tuple[sa.ColumnElement[Any], ...]:
    return (table.c.next_attempt_at, table.c.created_at, table.c.delivery_id)


def _receiver_hosts() -> sa.CTE:
    """Each host with a pending delivery, one index probe per host (a loose index scan)."""

    def first_host(after: sa.ColumnElement[Any] | None) -> sa.ScalarSelect[Any]:
        probe = deliveries.alias("probe")
        where = [probe.c.status == _DELIVERY_PENDING]
        if after is not None:
            where.append(probe.c.host > after)
        return sa.select(sa.func.min(probe.c.host)).where(*where).scalar_subquery()

    hosts = sa.select(first_host(None).label("host")).cte("hosts", recursive=True)
    return hosts.union_all(sa.select(first_host(hosts.c.host)).where(hosts.c.host.is_not(None)))


def _queues_lateral(hosts: sa.CTE) -> sa.CTE:
    """PostgreSQL: each host's first ``per_host`` due deliveries, with their places."""
    queued = deliveries.alias("queued")
    firsts = (
        sa.select(queued.c.host, *_due_order(queued))
        .where(queued.c.host == hosts.c.host, _due_delivery(queued))
        .order_by(*_due_order(queued))
        .limit(sa.bindparam("per_host", type_=sa.Integer))
        .lateral("firsts")
    )
    place = sa.func.row_number().over(partition_by=firsts.c.host, order_by=_due_order(firsts))
    return (
        sa.select(firsts.c.host, firsts.c.delivery_id, place.label("place"))
        .select_from(hosts.join(firsts, sa.true()))
        .cte("queue")
    )


def _queues_chained(hosts: sa.CTE) -> sa.CTE:
    """SQLite (no LATERAL): each host's first ``per_host`` due deliveries, one seek each,
    every seek starting after the previous delivery."""

    def next_due(host: sa.ColumnElement[Any], after: sa.ColumnElement[Any] | None) -> Any:
        queued = deliveries.alias("queued")
        where = [queued.c.host == host, _due_delivery(queued)]
        if after is not None:
            previous = deliveries.alias("previous")
            where.append(
                sa.tuple_(*_due_order(queued))
                > sa.select(*_due_order(previous))
                .where(previous.c.delivery_id == after)
                .correlate_except(previous)
                .scalar_subquery()
            )
        return (
            sa.select(queued.c.delivery_id)
            .where(*where)
            .order_by(*_due_order(queued))
            .limit(1)
            .scalar_subquery()
        )

    queue = (
        sa.select(
            hosts.c.host,
            next_due(hosts.c.host, None).label("delivery_id"),
            sa.literal(1, sa.Integer).label("place"),
        )
        .where(hosts.c.host.is_not(None))
        .cte("queue", recursive=True)
    )
    return queue.union_all(
        sa.select(queue.c.host, next_due(queue.c.host, queue.c.delivery_id), queue.c.place + 1)
        .where(queue.c.delivery_id.is_not(None))
        .where(queue.c.place < sa.bindparam("per_host", type_=sa.Integer))
    )


def claim_deliveries_statement(dialect: str) -> sa.Update:
    """Claim up to ``limit`` due deliveries for ``holder`` until ``expires``, oldest first,
    leaving out receivers that already have ``per_host`` deliveries in flight.

    A claim is in flight until it expires (``claim_expires_at >= now``), whoever holds
    it: a host's count covers every process. The statement seeks through indexes and
    never reads a receiver's backlog: the hosts with a pending delivery, then up to
    ``per_host`` due deliveries of each in order, then each host's claimed ones. A claim
    thus costs about hosts x ``per_host`` seeks however many deliveries wait. Ranking
    every due delivery instead cost SQLite 5 us per waiting delivery (2.6 ms behind a
    backlog of 500 to one slow receiver), and the outbox claims once per delivery sent.

    PostgreSQL locks the picked rows with ``FOR UPDATE SKIP LOCKED``, so concurrent
    claimers take different deliveries; two claimers may then each give a host its free
    places, so across N replicas a host has at most N x ``per_host`` in flight for a
    moment. SQLite: one writer at a time, so the statement alone is atomic.
    """
    hosts = _receiver_hosts()
    queue = _queues_lateral(hosts) if dialect == "postgresql" else _queues_chained(hosts)
    flying = deliveries.alias("flying")
    in_flight = (
        sa.select(sa.func.count())
        .where(
            flying.c.status == _DELIVERY_PENDING,
            flying.c.host == queue.c.host,
            flying.c.claim_expires_at >= sa.bindparam("now", type_=sa.Double),
        )
        .scalar_subquery()
    )
    ready = sa.select(queue.c.delivery_id).where(
        queue.c.place + in_flight <= sa.bindparam("per_host", type_=sa.Integer)
    )
    update = deliveries.update().values(
        claimed_by=sa.bindparam("holder"), claim_expires_at=sa.bindparam("expires")
    )
    ready_rows = ready.subquery("ready")
    locked = deliveries.alias("locked")
    if dialect == "postgresql":
        # The ready ids as one array, each row then locked by its key: PostgreSQL
        # estimates the recursive CTEs poorly and, joining them, would scan the table.
        ids = sa.select(sa.func.array_agg(ready_rows.c.delivery_id)).scalar_subquery()
        chosen = (
            sa.select(locked.c.delivery_id)
            .where(locked.c.delivery_id == sa.any_(sa.cast(ids, sa.ARRAY(sa.String))))
            .order_by(*_due_order(locked))
            .limit(sa.bindparam("limit"))
            .with_for_update(skip_locked=True, of=locked)
            .cte("picked")
            .prefix_with("MATERIALIZED")
        )
        # Checked again on the locked row: one another claimer took since the snapshot
        # is left out (this claim gets fewer; the next one the rest).
        update = update.where(
            deliveries.c.delivery_id == chosen.c.delivery_id, _due_delivery(deliveries)
        )
    else:
        # One writer at a time: the queue is due as read. Checking it again would lead
        # SQLite's planner to scan the due rows instead of seeking the picked ones.
        picked = (
            sa.select(locked.c.delivery_id)
            .select_from(ready_rows.join(locked, locked.c.delivery_id == ready_rows.c.delivery_id))
            .order_by(*_due_order(locked))
            .limit(sa.bindparam("limit"))
        )
        update = update.where(deliveries.c.delivery_id.in_(picked.scalar_subquery()))
    return update.returning(deliveries.c.delivery_id)
