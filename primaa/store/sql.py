"""The :class:`~primaa.jobs.storage.JobStore` on SQLite or PostgreSQL (SQLAlchemy Core).

Every operation is a plain function of a connection inside a transaction
(:class:`~primaa.store.sql_connection.SqlConnection`), handed to the database's one access object
(:class:`~primaa.store.sqlite_access.SqliteAccess`,
:class:`~primaa.store.postgres_access.PostgresAccess`), which also serves the
status reads and owns the error policy. The statements live in
:mod:`primaa.store.statements`, the row mapping in :mod:`primaa.store.rows`.
"""

from __future__ import annotations

import builtins
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from primaa.jobs.model import (
    Delivery,
    DeliveryAttempt,
    DeliveryRecord,
    DeliveryStatus,
    Job,
    JobState,
    JobStatus,
    check_transition,
)
from primaa.jobs.storage import (
    AlgorithmFilter,
    Deleted,
    JobPage,
    LostClaim,
    Requeued,
    StaleJob,
)
from primaa.store import statements as st
from primaa.store.claims import Claims
from primaa.store.common import check_limit, decode_cursor, encode_cursor
from primaa.store.delivery_claims import claim_deliveries_statement
from primaa.store.postgres_access import PostgresAccess
from primaa.store.rows import (
    Rows,
    attempt_row,
    deliveries_from_rows,
    delivery_row,
    first_job,
    job_row,
    job_with_delivery_records,
    jobs_from_rows,
    json_text,
    state_of,
)
from primaa.store.sql_connection import SqlConnection
from primaa.store.sql_engine import store_url
from primaa.store.sqlite_access import SqliteAccess

T = TypeVar("T")


class DatabaseAccess(Protocol):
    """One way into one database: transactions for operations, and plain reads."""

    async def open(self) -> None:
        """Connect and migrate."""

    async def close(self) -> None: ...

    async def run(self, operation: Callable[[SqlConnection], T]) -> T:
        """Run ``operation`` in a transaction and return what it returned."""

    async def run_sqlalchemy(self, operation: Callable[[Connection], T]) -> T:
        """Run ``operation`` on a SQLAlchemy connection in a transaction (Alembic)."""

    async def read(self, statement: sa.Select[Any], params: Mapping[str, Any]) -> Rows:
        """The rows of a small SELECT, by the fastest path the database offers."""

    async def read_first(
        self, statement: sa.Select[Any], params: Mapping[str, Any]
    ) -> Sequence[Any] | None:
        """The first row of a point read, in the statement's column order (no column
        names: the caller knows them), by the fastest path the database offers."""

    async def check_writable(self) -> None:
        """Raise StorageUnavailable when the database cannot take a write now."""


class SqlStore:
    """Jobs in SQLite (one service process) or PostgreSQL (several replicas)."""

    def __init__(self, url: str, *, engine_options: Mapping[str, Any] | None = None) -> None:
        """``engine_options`` go to SQLAlchemy's ``create_engine`` (SQLite) or
        ``create_async_engine`` (PostgreSQL): pool sizes, ``connect_args`` such as a
        PostgreSQL ``search_path``."""
        self.url = store_url(url)
        self.engine_options: Mapping[str, Any] = dict(engine_options or {})
        self.dialect = self.url.get_backend_name()
        self.exclusive = self.dialect == "sqlite"
        self.database: DatabaseAccess = (
            SqliteAccess(self.url, engine_options)
            if self.exclusive
            else PostgresAccess(self.url, engine_options)
        )
        self._claims = Claims(self.dialect)
        self._claim_deliveries = claim_deliveries_statement(self.dialect)

    async def run(self, operation: Callable[[SqlConnection], T]) -> T:
        """Run ``operation`` in a transaction: the store's one way to write."""
        return await self.database.run(operation)

    async def run_sqlalchemy(self, operation: Callable[[Connection], T]) -> T:
        """Run ``operation`` on a SQLAlchemy connection: migrations and schema inspection."""
        return await self.database.run_sqlalchemy(operation)

    async def open(self) -> None:
        await self.database.open()

    async def close(self) -> None:
        await self.database.close()

    async def check_writable(self) -> None:
        await self.database.check_writable()

    async def create(self, job: Job) -> None:
        row = job_row(job)
        try:
            await self.run(lambda conn: conn.execute(st.INSERT_JOB, row))
        except IntegrityError as exc:
            raise ValueError(f"job {job.job_id} already exists") from exc

    async def get(self, job_id: str) -> Job | None:
        return first_job(await self.database.read(st.GET_JOB, {"job_id": job_id}))

    async def get_with_deliveries(
        self, job_id: str
    ) -> tuple[Job, builtins.list[DeliveryRecord]] | None:
        return job_with_delivery_records(
            await self.database.read(st.JOB_WITH_DELIVERIES, {"job_id": job_id})
        )

    async def state(self, job_id: str) -> JobState | None:
        return state_of(await self.database.read_first(st.GET_STATE, {"job_id": job_id}))

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
        query, params = st.list_jobs(
            status=None if status is None else status.value,
            algorithm=algorithm,
            client_id=client_id,
            after=None if cursor is None else decode_cursor(cursor),
            limit=limit + 1,
        )
        found = jobs_from_rows(await self.run(lambda conn: Rows.of(conn.execute(query, params))))
        page = found[:limit]
        more = len(found) > limit
        next_cursor = encode_cursor(page[-1].created_at, page[-1].job_id) if more else None
        return JobPage(jobs=page, next_cursor=next_cursor)

    async def claim(
        self,
        *,
        lease_owner: str,
        lease_seconds: float,
        limit: int,
        now: float,
        algorithms: AlgorithmFilter | None = None,
    ) -> builtins.list[Job]:
        if limit <= 0:
            return []
        params = {
            "limit": limit,
            "lease_to": lease_owner,
            "expires": now + lease_seconds,
            "now": now,
        }
        claimed = jobs_from_rows(
            await self.run(lambda conn: self._claims.run(conn, algorithms, params))
        )
        claimed.sort(key=lambda job: (job.created_at, job.job_id))
        return claimed

    async def renew(
        self, job_ids: Sequence[str], *, lease_owner: str, lease_seconds: float, now: float
    ) -> None:
        if not job_ids:
            return
        params = {"ids": list(job_ids), "holder": lease_owner, "expires": now + lease_seconds}
        await self.run(lambda conn: conn.execute(st.RENEW, params))

    async def requeue_expired(
        self,
        *,
        now: float,
        max_attempts: int,
        delivery: Callable[[Job], Delivery | None] | None = None,
    ) -> Requeued:
        params = {"now": now, "stamp": now if math.isfinite(now) else time.time()}

        def requeue(conn: SqlConnection) -> Requeued:
            cancelled = jobs_from_rows(Rows.of(conn.execute(st.REQUEUE_CANCEL, params)))
            failed_params = {**params, "max_attempts": max_attempts}
            failed = jobs_from_rows(Rows.of(conn.execute(st.REQUEUE_FAIL, failed_params)))
            retried = conn.execute(st.REQUEUE_RETRY, params).scalars().all()
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
        await self.run(lambda conn: conn.execute(st.SET_PROGRESS, params))

    async def set_image(self, job_id: str, image: Mapping[str, Any]) -> None:
        params = {"id": job_id, "new_image": dict(image)}
        await self.run(lambda conn: conn.execute(st.SET_IMAGE, params))

    async def request_cancel(self, job_id: str) -> Job | None:
        now = time.time()

        def cancel(conn: SqlConnection) -> Rows:
            cancelled = Rows.of(conn.execute(st.CANCEL, {"id": job_id, "now": now}))
            return (
                cancelled
                if cancelled.rows
                else Rows.of(conn.execute(st.GET_JOB, {"job_id": job_id}))
            )

        return first_job(await self.run(cancel))

    async def finish(
        self,
        job: Job,
        *,
        expected: JobStatus,
        result: Mapping[str, Any] | None = None,
        delivery: Delivery | None = None,
        lease_owner: str | None = None,
    ) -> None:
        check_transition(expected, job.status)
        values = job_row(job)
        params = {f"new_{name}": values[name] for name in st.FINISH_COLUMNS}
        params.update(
            id=job.job_id, expected=expected.value, cancel=job.cancel_requested, holder=lease_owner
        )
        geojson = json_text(result) if result is not None else None

        def finish(conn: SqlConnection) -> None:
            if conn.execute(st.FINISH, params).rowcount != 1:
                held = f" leased to {lease_owner}" if lease_owner is not None else ""
                raise StaleJob(f"job {job.job_id} is no longer {expected}{held}")
            if geojson is not None:
                conn.execute(st.INSERT_RESULT, {"job_id": job.job_id, "geojson": geojson})
            if delivery is not None:
                _insert_delivery(conn, delivery)

        await self.run(finish)

    async def get_result(self, job_id: str) -> Mapping[str, Any] | None:
        query = {"job_id": job_id}
        text = await self.run(lambda conn: conn.execute(st.GET_RESULT, query).scalar())
        if text is None:
            return None
        result: dict[str, Any] = json.loads(text)
        return result

    async def delete(self, job_id: str) -> Deleted | None:
        query = {"job_id": job_id}

        def delete(conn: SqlConnection) -> Deleted | None:
            state = state_of(conn.execute(st.GET_STATE, query).first())
            if state is None:
                return None
            text = conn.execute(st.GET_RESULT, query).scalar()
            if conn.execute(st.DELETE_JOB, query).rowcount != 1:
                raise StaleJob(f"job {job_id} is {state.status}, not finished")
            return Deleted(json.loads(text) if text is not None else None)

        return await self.run(delete)

    async def count_by_status(self) -> Mapping[tuple[str, JobStatus], int]:
        rows = await self.run(lambda conn: conn.execute(st.COUNT).all())
        return {(algorithm, JobStatus(status)): count for algorithm, status, count in rows}

    async def due_deliveries(self, *, now: float, limit: int) -> builtins.list[Delivery]:
        if limit <= 0:
            return []
        params = {"now": now, "limit": limit}
        return deliveries_from_rows(
            await self.run(lambda conn: Rows.of(conn.execute(st.DUE, params)))
        )

    async def claim_deliveries(
        self, *, holder: str, now: float, claim_seconds: float, limit: int, per_host: int
    ) -> builtins.list[Delivery]:
        if limit <= 0:
            return []
        params = {
            "holder": holder,
            "now": now,
            "expires": now + claim_seconds,
            "limit": limit,
            "per_host": per_host,
        }

        def claim(conn: SqlConnection) -> Rows:
            ids = conn.execute(self._claim_deliveries, params).scalars().all()
            if not ids:
                return Rows((), [])
            return Rows.of(conn.execute(st.CLAIMED, {"ids": list(ids)}))

        claimed = await self.run(claim)
        return deliveries_from_rows(claimed) if claimed.rows else []

    async def record_attempt(
        self,
        delivery_id: str,
        attempt: DeliveryAttempt,
        *,
        status: DeliveryStatus,
        next_attempt_at: float | None,
        holder: str | None = None,
    ) -> None:
        params = {
            "id": delivery_id,
            "new_status": status.value,
            "next": next_attempt_at,
            "holder": holder,
        }

        def record(conn: SqlConnection) -> None:
            if conn.execute(st.RECORD, params).rowcount != 1:
                if (
                    holder is not None
                    and conn.execute(st.DELIVERY_EXISTS, {"id": delivery_id}).first()
                ):
                    raise LostClaim(delivery_id)
                raise KeyError(delivery_id)
            conn.execute(st.INSERT_ATTEMPT, attempt_row(delivery_id, attempt))

        await self.run(record)

    async def release_deliveries(self, delivery_ids: Sequence[str] | None, *, holder: str) -> None:
        if delivery_ids is None:
            await self.run(lambda conn: conn.execute(st.RELEASE_ALL))
        elif delivery_ids:
            params = {"ids": list(delivery_ids), "holder": holder}
            await self.run(lambda conn: conn.execute(st.RELEASE, params))

    async def deliveries_for(self, job_id: str) -> builtins.list[Delivery]:
        """Read with every ``GET /jobs/{id}``, by the same path as :meth:`get`."""
        return deliveries_from_rows(
            await self.database.read(st.DELIVERIES_FOR_JOB, {"job_id": job_id})
        )

    async def add_delivery(self, delivery: Delivery) -> None:
        def add(conn: SqlConnection) -> None:
            if conn.execute(st.JOB_EXISTS, {"job_id": delivery.job_id}).first() is None:
                raise KeyError(delivery.job_id)
            _insert_delivery(conn, delivery)

        try:
            await self.run(add)
        except IntegrityError as exc:
            raise ValueError(f"delivery {delivery.delivery_id} already exists") from exc


def _insert_delivery(conn: SqlConnection, delivery: Delivery) -> None:
    conn.execute(st.INSERT_DELIVERY, delivery_row(delivery))
    if delivery.attempts:
        conn.execute(
            st.INSERT_ATTEMPT,
            [attempt_row(delivery.delivery_id, a) for a in delivery.attempts],
        )
