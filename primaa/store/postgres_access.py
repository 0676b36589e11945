"""The one way into PostgreSQL: SQLAlchemy's async engine on asyncpg.

Each operation runs in its own transaction, since several replicas write at once
(no group commit: their writes do not queue behind one writer). Reads run in
autocommit: a single SELECT sees one snapshot anyway, and without BEGIN and
ROLLBACK it is one round trip instead of three. Every database error reaches the
caller as SQLAlchemy's :class:`~sqlalchemy.exc.DBAPIError`.

A status read costs more here than on the bare driver it replaced (asyncpg's
``fetchrow``): in-process, 2026-11-28, 300-380 against 150-210 us of client CPU
per read, the price of one way in (pool, greenlet, result machinery).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import DBAPIError

from primaa.jobs.errors import StorageUnavailable
from primaa.store.rows import Rows
from primaa.store.sql_engine import postgres_engine, upgrade_schema
from primaa.store.storage_errors import storage_error

T = TypeVar("T")


class PostgresAccess:
    """The async engine, and an autocommit view of it (same pool) for reads."""

    def __init__(self, url: URL, options: Mapping[str, Any] | None = None) -> None:
        self.engine = postgres_engine(url, options)
        self.dialect = self.engine.dialect
        self._reads = self.engine.execution_options(isolation_level="AUTOCOMMIT")

    async def open(self) -> None:
        """Migrate (the pool connects on first use)."""
        await self.run(upgrade_schema)

    async def close(self) -> None:
        await self.engine.dispose()

    async def run(self, operation: Callable[[Connection], T]) -> T:
        """Run ``operation`` in a transaction of its own (a server that cannot write:
        :class:`StorageUnavailable`)."""
        try:
            async with self.engine.begin() as conn:
                return await conn.run_sync(operation)
        except DBAPIError as exc:
            if (unavailable := storage_error(exc)) is not None:
                raise unavailable from exc
            raise

    async def run_sqlalchemy(self, operation: Callable[[Connection], T]) -> T:
        """The same as :meth:`run` here (the SQLite store's writer needs it apart)."""
        return await self.run(operation)

    async def check_writable(self) -> None:
        """A server that is read-only (a standby, or read-only by setting) is refused."""
        query = sa.text(
            "SELECT pg_is_in_recovery() OR current_setting('transaction_read_only') = 'on'"
        )
        async with self._reads.connect() as conn:
            if (await conn.execute(query)).scalar():
                raise StorageUnavailable("the database is read-only", full=False)

    async def read(self, statement: sa.Select[Any], params: Mapping[str, Any]) -> Rows:
        """The rows of ``statement``, outside a transaction."""
        async with self._reads.connect() as conn:
            return Rows.of(await conn.execute(statement, params))

    async def read_first(
        self, statement: sa.Select[Any], params: Mapping[str, Any]
    ) -> Sequence[Any] | None:
        """The first row of ``statement``, outside a transaction."""
        async with self._reads.connect() as conn:
            row: Sequence[Any] | None = (await conn.execute(statement, params)).first()
            return row
