"""The :class:`~primaa.jobs.storage.JobStore` on SQLite or PostgreSQL (SQLAlchemy Core).

Every state change is a single ``UPDATE ... WHERE status = <expected>`` whose
row count (or ``RETURNING``) tells whether this caller won. Every operation is a
plain function of a :class:`~sqlalchemy.engine.Connection` inside a transaction:
on SQLite they run in one thread with the synchronous driver, batched by
:class:`~primaa.store.group_commit.GroupCommit` (transactions begin IMMEDIATE,
so a second process meets the busy timeout, not ``SQLITE_BUSY``); on PostgreSQL
each runs in its own transaction through asyncpg (``run_sync``), since several
replicas write at once there. Statements used on hot paths are built once, so
each call only binds parameters and hits SQLAlchemy's compiled cache.
"""

from __future__ import annotations

import builtins
import json
import math
import pathlib
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final, TypeVar

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import URL, Connection, Engine, Row, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from primaa.fastjson import dumps
from primaa.jobs.model import (
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
    Job,
    JobState,
    JobStatus,
    check_transition,
)
from primaa.jobs.storage import JobPage, Requeued, StaleJob
from primaa.store.common import EXPIRED_ERROR, check_limit, decode_cursor, encode_cursor
from primaa.store.group_commit import GroupCommit
from primaa.store.tables import deliveries, delivery_attempts, jobs, results

T = TypeVar("T")

MIGRATIONS_DIR: Final = pathlib.Path(__file__).with_name("migrations")

#: ``UPDATE ... RETURNING`` arrived in SQLite 3.35.
SQLITE_MIN_VERSION: Final = (3, 35, 0)

#: Milliseconds a SQLite writer waits for another one before giving up.
SQLITE_BUSY_TIMEOUT_MS: Final = 10_000

#: Bytes of the database the status reader maps into memory: a read then copies no
#: pages out of the OS cache (an eighth less CPU per status read with 100,000 jobs,
#: side by side). The mapped pages count in the process's RSS, up to the file's size;
#: they are page cache, which reads through read() would fill just the same.
SQLITE_READER_MMAP_BYTES: Final = 256 * 1024 * 1024

#: Milliseconds the status reader, which runs on the event loop, waits on a locked
#: database before handing the read to the store's thread: the loop's lag budget.
SQLITE_READER_BUSY_TIMEOUT_MS: Final = 20

#: Arbitrary, fixed key of the PostgreSQL advisory lock that serialises migrations
#: when several replicas start at once.
MIGRATION_LOCK_KEY: Final = 0x7072696D6161

#: The driver each backend runs on. SQLite's is the standard library's module, in the
#: store's own thread; ``sqlite+aiosqlite`` (the default URL of earlier versions) is
#: accepted and means the same file.
_DRIVERS: Final = {"sqlite": "sqlite", "postgresql": "postgresql+asyncpg"}
_ALIASES: Final = {
    "sqlite+pysqlite": "sqlite",
    "sqlite+aiosqlite": "sqlite",
    "postgres": "postgresql",
}


def store_url(url: str) -> URL:
    """``url`` with the driver this store runs on (``postgresql://`` → ``postgresql+asyncpg://``)."""
    parsed = make_url(url)
    named = _ALIASES.get(parsed.drivername, parsed.drivername)
    backend = named.partition("+")[0]
    if backend not in _DRIVERS:
        raise ValueError(f"unsupported database URL scheme: {parsed.drivername}")
    driver = _DRIVERS[backend]
    if named not in {backend, driver}:
        raise ValueError(f"{parsed.drivername} is not a driver this store runs on; use {driver}")
    return parsed.set(drivername=driver)


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # The driver must not open transactions itself: _sqlite_begin does, IMMEDIATE.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    """Take the write lock when the transaction starts, not at its first write: a
    transaction that read first could not wait for another process's writer."""
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _upgrade_schema(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(sa.select(sa.func.pg_advisory_xact_lock(MIGRATION_LOCK_KEY)))
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


_PENDING: Final = JobStatus.PENDING.value
_RUNNING: Final = JobStatus.RUNNING.value

_GET_JOB: Final = sa.select(jobs).where(jobs.c.job_id == sa.bindparam("job_id"))
_GET_STATE: Final = sa.select(jobs.c.status, jobs.c.error, jobs.c.client_id).where(
    jobs.c.job_id == sa.bindparam("job_id")
)
_GET_RESULT: Final = sa.select(results.c.geojson).where(results.c.job_id == sa.bindparam("job_id"))
_SET_PROGRESS: Final = (
    jobs.update()
    .where(jobs.c.job_id == sa.bindparam("id"), jobs.c.status == _RUNNING)
    .values(progress_percent=sa.bindparam("new_progress"))
)
_RENEW: Final = (
    jobs.update()
    .where(
        jobs.c.job_id.in_(sa.bindparam("ids", expanding=True)),
        jobs.c.status == _RUNNING,
        jobs.c.lease_owner == sa.bindparam("holder"),
    )
    .values(lease_expires_at=sa.bindparam("expires"))
)
#: Everything a transition may change; ``parameters`` and ``job_id`` are fixed at creation.
_FINISH_COLUMNS: Final = tuple(
    c.name for c in jobs.columns if c.name not in {"job_id", "parameters", "cancel_requested"}
)
_FINISH: Final = (
    jobs.update()
    .where(jobs.c.job_id == sa.bindparam("id"), jobs.c.status == sa.bindparam("expected"))
    .values(
        {name: sa.bindparam(f"new_{name}") for name in _FINISH_COLUMNS}
        # A cancel request that lands while the job is being finished is kept.
        | {"cancel_requested": sa.or_(jobs.c.cancel_requested, sa.bindparam("cancel"))}
    )
)
_CANCEL: Final = (
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
_REQUEUE_CANCEL: Final = (
    jobs.update()
    .where(_EXPIRED, jobs.c.cancel_requested == sa.true())
    .values(status=JobStatus.CANCELLED.value, finished_at=sa.bindparam("stamp"), **_LEASE_CLEARED)
    .returning(*jobs.columns)
)
_REQUEUE_FAIL: Final = (
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
_REQUEUE_RETRY: Final = (
    jobs.update()
    .where(_EXPIRED)
    .values(status=_PENDING, progress_percent=0.0, **_LEASE_CLEARED)
    .returning(jobs.c.job_id)
)
_COUNT: Final = sa.select(jobs.c.algorithm, jobs.c.status, sa.func.count()).group_by(
    jobs.c.algorithm, jobs.c.status
)


def _deliveries_with_attempts(where: sa.ColumnElement[bool], *order: Any) -> sa.Select[Any]:
    """Deliveries and their attempts in one query: a delivery's columns, then one
    attempt's (NULLs for a delivery without any), read by ``_deliveries_from_rows``."""
    return (
        sa.select(
            deliveries,
            delivery_attempts.c.at,
            delivery_attempts.c.status_code,
            delivery_attempts.c.error,
            delivery_attempts.c.duration,
        )
        .select_from(
            deliveries.outerjoin(
                delivery_attempts, delivery_attempts.c.delivery_id == deliveries.c.delivery_id
            )
        )
        .where(where)
        .order_by(*order, deliveries.c.delivery_id, delivery_attempts.c.attempt_id)
    )


#: The deliveries of one job, for ``GET /jobs/{id}``.
_FOR_JOB: Final = _deliveries_with_attempts(
    deliveries.c.job_id == sa.bindparam("job_id"), deliveries.c.created_at
)
_DUE_ORDER: Final = (deliveries.c.next_attempt_at, deliveries.c.created_at)
#: The ``limit`` deliveries due first, for the outbox.
_DUE: Final = _deliveries_with_attempts(
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
_RECORD: Final = (
    deliveries.update()
    .where(deliveries.c.delivery_id == sa.bindparam("id"))
    .values(
        status=sa.bindparam("new_status"),
        next_attempt_at=sa.func.coalesce(
            sa.bindparam("next", type_=sa.Double), deliveries.c.next_attempt_at
        ),
    )
)
_JOB_EXISTS: Final = sa.select(jobs.c.job_id).where(jobs.c.job_id == sa.bindparam("job_id"))


def _claim_statement(dialect: str) -> sa.Update:
    """Pending → Running for the oldest ``limit`` jobs, in one statement.

    PostgreSQL: a materialised CTE picks the rows once and locks them with
    ``FOR UPDATE SKIP LOCKED``, so concurrent claimers take different jobs instead
    of queueing on the same ones. (As a plain ``IN (subquery)`` the planner may
    rescan the subquery per row and claim more than ``limit``.)
    SQLite: one writer at a time, so the statement alone is atomic.
    """
    oldest = (
        sa.select(jobs.c.job_id)
        .where(jobs.c.status == _PENDING)
        .order_by(jobs.c.created_at, jobs.c.job_id)
        .limit(sa.bindparam("limit"))
    )
    update = jobs.update().values(
        status=_RUNNING,
        lease_owner=sa.bindparam("lease_to"),
        lease_expires_at=sa.bindparam("expires"),
        started_at=sa.bindparam("now"),
        updated_at=sa.bindparam("now"),
        attempts=jobs.c.attempts + 1,
        progress_percent=0.0,
    )
    if dialect == "postgresql":
        picked = oldest.with_for_update(skip_locked=True).cte("picked").prefix_with("MATERIALIZED")
        update = update.where(jobs.c.job_id == picked.c.job_id)
    else:
        update = update.where(jobs.c.job_id.in_(oldest.scalar_subquery()))
    return update.where(jobs.c.status == _PENDING).returning(*jobs.columns)


def _json_text(value: Any) -> str:
    return dumps(value).decode()


def _job_from_row(row: Sequence[Any]) -> Job:
    """A job from a row in ``jobs`` column order (the field order of :class:`Job`).

    Rows read through SQLAlchemy carry decoded JSON; rows read from the driver
    on the status-read path carry it as text.
    """
    parameters = row[2]
    if isinstance(parameters, str):
        parameters = json.loads(parameters)
    values = (row[0], row[1], parameters, _STATUSES[row[3]], *row[4:19], bool(row[19]))
    return Job(*values)


#: Status by stored value: a dict lookup is a tenth of the cost of calling the enum.
_STATUSES: Final = {status.value: status for status in JobStatus}


def _deliveries_from_rows(rows: Iterable[Sequence[Any]]) -> builtins.list[Delivery]:
    """Deliveries from rows of ``_deliveries_with_attempts`` (``payload`` decoded, or JSON
    text from the bare driver), in the rows' order."""
    found: dict[str, tuple[Sequence[Any], builtins.list[DeliveryAttempt]]] = {}
    for row in rows:
        entry = found.setdefault(row[0], (row, []))
        at, status_code, error, duration = row[8:12]
        if at is not None:
            entry[1].append(
                DeliveryAttempt(at=at, status_code=status_code, error=error, duration=duration)
            )
    return [
        Delivery(
            delivery_id=delivery_id,
            job_id=job_id,
            url=url,
            payload=json.loads(payload) if isinstance(payload, str) else payload,
            token=token,
            status=DeliveryStatus(status),
            next_attempt_at=next_attempt_at,
            attempts=tuple(attempts),
            created_at=created_at,
        )
        for (
            delivery_id,
            job_id,
            url,
            token,
            payload,
            status,
            next_attempt_at,
            created_at,
            *_,
        ), attempts in found.values()
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
    }


def _attempt_values(delivery_id: str, attempt: DeliveryAttempt) -> dict[str, Any]:
    return {
        "delivery_id": delivery_id,
        "at": attempt.at,
        "status_code": attempt.status_code,
        "error": attempt.error,
        "duration": attempt.duration,
    }


class SqlStore:
    """Jobs in SQLite (one service process) or PostgreSQL (several replicas)."""

    def __init__(self, url: str, *, engine_options: Mapping[str, Any] | None = None) -> None:
        """``engine_options`` go to SQLAlchemy's ``create_engine`` (SQLite) or
        ``create_async_engine`` (PostgreSQL): pool sizes, ``connect_args`` such as a
        PostgreSQL ``search_path``."""
        self.url = store_url(url)
        self.dialect = self.url.get_backend_name()
        self.exclusive = self.dialect == "sqlite"
        options = dict(engine_options or {})
        # The JSON columns (parameters, callback payloads) and results: written with the
        # encoder of the answers, 25x faster than json on a large result.
        options.setdefault("json_serializer", _json_text)
        self._commits: GroupCommit | None = None
        self._engine: AsyncEngine | None = None
        dialect: sa.Dialect
        if self.exclusive:
            if self.url.database in {None, "", ":memory:"}:
                raise ValueError(
                    "SqlStore needs a SQLite file; use memory:// for a store in memory"
                )
            # One connection, used only by the store's thread (and closed there).
            options.setdefault("pool_size", 1)
            options.setdefault("max_overflow", 0)
            options.setdefault("connect_args", {"check_same_thread": False})
            sync_engine: Engine = sa.create_engine(self.url, **options)
            sa.event.listen(sync_engine, "connect", _sqlite_connect)
            sa.event.listen(sync_engine, "begin", _sqlite_begin)
            self._sync_engine = sync_engine
            dialect = sync_engine.dialect
        else:
            self._engine = create_async_engine(self.url, **options)
            dialect = self._engine.dialect
        self._claim = _claim_statement(self.dialect)
        self._get_sql = str(_GET_JOB.compile(dialect=dialect))
        self._state_sql = str(_GET_STATE.compile(dialect=dialect))
        self._deliveries_sql = str(_FOR_JOB.compile(dialect=dialect))
        self._reader: sqlite3.Connection | None = None

    async def run(self, operation: Callable[[Connection], T]) -> T:
        """Run ``operation`` in a transaction: the store's one way to its database."""
        if self.exclusive:
            if self._commits is None:
                raise RuntimeError("the store is not open")
            return await self._commits.run(operation)
        assert self._engine is not None
        async with self._engine.begin() as conn:
            return await conn.run_sync(operation)

    async def open(self) -> None:
        if self.exclusive and sqlite3.sqlite_version_info < SQLITE_MIN_VERSION:
            raise RuntimeError(
                f"SQLite {sqlite3.sqlite_version} is too old: claims need UPDATE ... RETURNING"
                f" (SQLite {'.'.join(map(str, SQLITE_MIN_VERSION))} or newer)"
            )
        if self.exclusive and self._commits is None:
            assert self.url.database is not None
            pathlib.Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
            self._commits = GroupCommit(self._sync_engine, thread_name="primaa-sqlite")
        await self.run(_upgrade_schema)
        if self.exclusive and self._reader is None:
            # Autocommit: each SELECT is its own short read transaction, so the
            # reader never pins an old snapshot (which would stall WAL checkpoints).
            self._reader = sqlite3.connect(str(self.url.database), isolation_level=None)
            self._reader.execute(f"PRAGMA busy_timeout={SQLITE_READER_BUSY_TIMEOUT_MS}")
            self._reader.execute("PRAGMA query_only=ON")
            self._reader.execute(f"PRAGMA mmap_size={SQLITE_READER_MMAP_BYTES}")

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._commits is not None:
            commits, self._commits = self._commits, None
            await commits.call(self._sync_engine.dispose)
            await commits.close()
        if self._engine is not None:
            await self._engine.dispose()

    async def create(self, job: Job) -> None:
        row = job_row(job)
        try:
            await self.run(lambda conn: conn.execute(jobs.insert(), row))
        except IntegrityError as exc:
            raise ValueError(f"job {job.job_id} already exists") from exc

    async def get(self, job_id: str) -> Job | None:
        row = await self._read_row(self._get_sql, _GET_JOB, job_id)
        return None if row is None else _job_from_row(row)

    async def state(self, job_id: str) -> JobState | None:
        row = await self._read_row(self._state_sql, _GET_STATE, job_id)
        return None if row is None else JobState(_STATUSES[row[0]], row[1], row[2])

    async def _read_row(
        self, sql: str, statement: sa.Select[Any], job_id: str
    ) -> Sequence[Any] | None:
        """The status reads, the hottest calls: one prepared query on the bare driver.

        Through SQLAlchemy a read costs a transaction begin and rollback on top of
        the query (three round trips on PostgreSQL, a hand-off to the store's
        thread on SQLite); here it is one. SQLite reads go to a dedicated
        connection, which WAL lets read while the store's thread writes, and run
        on the event loop's own thread: a primary-key lookup in the page cache
        takes microseconds, while a thread hand-off costs a queue, a wake-up and,
        under load, up to a GIL switch interval (5 ms) before that thread may run.
        """
        if self._reader is not None:
            try:
                row: Sequence[Any] | None = self._reader.execute(sql, (job_id,)).fetchone()
            except sqlite3.OperationalError:
                # Locked (another process is recovering the database): wait in the
                # store's thread instead of on the event loop.
                query = {"job_id": job_id}
                return await self.run(lambda conn: conn.execute(statement, query).first())
            return row
        if self.exclusive:
            raise RuntimeError("the store is not open")
        assert self._engine is not None
        async with self._engine.connect() as conn:
            raw = await conn.get_raw_connection()
            driver: Any = raw.driver_connection
            found: Sequence[Any] | None = await driver.fetchrow(sql, job_id)
            return found

    async def list(
        self,
        *,
        status: JobStatus | None = None,
        algorithm: str | None = None,
        client_id: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> JobPage:
        check_limit(limit)
        query = sa.select(jobs)
        if status is not None:
            query = query.where(jobs.c.status == status.value)
        if algorithm is not None:
            query = query.where(jobs.c.algorithm == algorithm)
        if client_id is not None:
            query = query.where(jobs.c.client_id == client_id)
        if cursor is not None:
            created_at, job_id = decode_cursor(cursor)
            query = query.where(
                sa.or_(
                    jobs.c.created_at < created_at,
                    sa.and_(jobs.c.created_at == created_at, jobs.c.job_id < job_id),
                )
            )
        query = query.order_by(jobs.c.created_at.desc(), jobs.c.job_id.desc()).limit(limit + 1)
        rows = await self.run(lambda conn: conn.execute(query).all())
        page = [_job_from_row(row) for row in rows[:limit]]
        more = len(rows) > limit
        next_cursor = encode_cursor(page[-1].created_at, page[-1].job_id) if more else None
        return JobPage(jobs=page, next_cursor=next_cursor)

    async def claim(
        self, *, lease_owner: str, lease_seconds: float, limit: int, now: float
    ) -> builtins.list[Job]:
        if limit <= 0:
            return []
        params = {
            "limit": limit,
            "lease_to": lease_owner,
            "expires": now + lease_seconds,
            "now": now,
        }
        rows = await self.run(lambda conn: conn.execute(self._claim, params).all())
        claimed = [_job_from_row(row) for row in rows]
        claimed.sort(key=lambda job: (job.created_at, job.job_id))
        return claimed

    async def renew(
        self, job_ids: Sequence[str], *, lease_owner: str, lease_seconds: float, now: float
    ) -> None:
        if not job_ids:
            return
        params = {"ids": list(job_ids), "holder": lease_owner, "expires": now + lease_seconds}
        await self.run(lambda conn: conn.execute(_RENEW, params))

    async def requeue_expired(
        self,
        *,
        now: float,
        max_attempts: int,
        delivery: Callable[[Job], Delivery | None] | None = None,
    ) -> Requeued:
        params = {"now": now, "stamp": now if math.isfinite(now) else time.time()}

        def requeue(conn: Connection) -> Requeued:
            cancelled = [_job_from_row(row) for row in conn.execute(_REQUEUE_CANCEL, params)]
            failed = [
                _job_from_row(row)
                for row in conn.execute(_REQUEUE_FAIL, {**params, "max_attempts": max_attempts})
            ]
            retried = conn.execute(_REQUEUE_RETRY, params).scalars().all()
            for ended in (*failed, *cancelled):
                queued = delivery(ended) if delivery is not None else None
                if queued is not None:
                    _insert_delivery(conn, queued)
            return Requeued(retried=sorted(retried), failed=failed, cancelled=cancelled)

        try:
            return await self.run(requeue)
        except IntegrityError as exc:
            raise ValueError(f"a delivery already exists: {exc.orig}") from exc

    async def set_progress(self, job_id: str, progress_percent: float) -> None:
        params = {"id": job_id, "new_progress": progress_percent}
        await self.run(lambda conn: conn.execute(_SET_PROGRESS, params))

    async def request_cancel(self, job_id: str) -> Job | None:
        now = time.time()

        def cancel(conn: Connection) -> Row[Any] | None:
            row = conn.execute(_CANCEL, {"id": job_id, "now": now}).first()
            return row or conn.execute(_GET_JOB, {"job_id": job_id}).first()

        row = await self.run(cancel)
        return None if row is None else _job_from_row(row)

    async def finish(
        self,
        job: Job,
        *,
        expected: JobStatus,
        result: Mapping[str, Any] | None = None,
        delivery: Delivery | None = None,
    ) -> None:
        check_transition(expected, job.status)
        values = job_row(job)
        params = {f"new_{name}": values[name] for name in _FINISH_COLUMNS}
        params.update(id=job.job_id, expected=expected.value, cancel=job.cancel_requested)
        geojson = _json_text(result) if result is not None else None

        def finish(conn: Connection) -> None:
            if conn.execute(_FINISH, params).rowcount != 1:
                raise StaleJob(f"job {job.job_id} is no longer {expected}")
            if geojson is not None:
                conn.execute(results.insert(), {"job_id": job.job_id, "geojson": geojson})
            if delivery is not None:
                _insert_delivery(conn, delivery)

        await self.run(finish)

    async def get_result(self, job_id: str) -> Mapping[str, Any] | None:
        query = {"job_id": job_id}
        text = await self.run(lambda conn: conn.execute(_GET_RESULT, query).scalar())
        if text is None:
            return None
        result: dict[str, Any] = json.loads(text)
        return result

    async def count_by_status(self) -> Mapping[tuple[str, JobStatus], int]:
        rows = await self.run(lambda conn: conn.execute(_COUNT).all())
        return {(algorithm, JobStatus(status)): count for algorithm, status, count in rows}

    async def due_deliveries(self, *, now: float, limit: int) -> builtins.list[Delivery]:
        if limit <= 0:
            return []
        params = {"now": now, "limit": limit}
        return _deliveries_from_rows(await self.run(lambda conn: conn.execute(_DUE, params).all()))

    async def record_attempt(
        self,
        delivery_id: str,
        attempt: DeliveryAttempt,
        *,
        status: DeliveryStatus,
        next_attempt_at: float | None,
    ) -> None:
        params = {"id": delivery_id, "new_status": status.value, "next": next_attempt_at}

        def record(conn: Connection) -> None:
            if conn.execute(_RECORD, params).rowcount != 1:
                raise KeyError(delivery_id)
            conn.execute(delivery_attempts.insert(), _attempt_values(delivery_id, attempt))

        await self.run(record)

    async def deliveries_for(self, job_id: str) -> builtins.list[Delivery]:
        """Read with every ``GET /jobs/{id}``: on SQLite, from the reader like :meth:`get`."""
        if self._reader is not None:
            return _deliveries_from_rows(
                self._reader.execute(self._deliveries_sql, (job_id,)).fetchall()
            )
        query = {"job_id": job_id}
        rows = await self.run(lambda conn: conn.execute(_FOR_JOB, query).all())
        return _deliveries_from_rows(rows)

    async def add_delivery(self, delivery: Delivery) -> None:
        def add(conn: Connection) -> None:
            if conn.execute(_JOB_EXISTS, {"job_id": delivery.job_id}).first() is None:
                raise KeyError(delivery.job_id)
            _insert_delivery(conn, delivery)

        try:
            await self.run(add)
        except IntegrityError as exc:
            raise ValueError(f"delivery {delivery.delivery_id} already exists") from exc


def _insert_delivery(conn: Connection, delivery: Delivery) -> None:
    conn.execute(deliveries.insert(), delivery_row(delivery))
    if delivery.attempts:
        conn.execute(
            delivery_attempts.insert(),
            [_attempt_values(delivery.delivery_id, a) for a in delivery.attempts],
        )
