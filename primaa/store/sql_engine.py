"""Engines of the SQL store: the driver each URL runs on, SQLite's connection
settings, and the schema migrations.
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping
from typing import Any, Final

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from primaa.store.rows import json_text

MIGRATIONS_DIR: Final = pathlib.Path(__file__).with_name("migrations")

#: ``UPDATE ... RETURNING`` arrived in SQLite 3.35.
SQLITE_MIN_VERSION: Final = (3, 35, 0)

#: Milliseconds a SQLite writer waits for another one before giving up.
SQLITE_BUSY_TIMEOUT_MS: Final = 10_000

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


def _engine_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    chosen = dict(options or {})
    # The JSON columns (parameters, callback payloads) written as results are.
    chosen.setdefault("json_serializer", json_text)
    return chosen


def sqlite_engine(url: URL, options: Mapping[str, Any] | None = None) -> Engine:
    """A synchronous engine on a SQLite file, for the one thread that writes it.

    Its transactions begin IMMEDIATE (a second process then meets the busy timeout,
    not ``SQLITE_BUSY``), which also gives SAVEPOINTs their documented behaviour
    under pysqlite; ``options`` go to ``create_engine``.
    """
    if url.database in {None, "", ":memory:"}:
        raise ValueError("SqlStore needs a SQLite file; use memory:// for a store in memory")
    chosen = _engine_options(options)
    # One connection, used only by the store's thread (and closed there).
    chosen.setdefault("pool_size", 1)
    chosen.setdefault("max_overflow", 0)
    chosen.setdefault("connect_args", {"check_same_thread": False})
    engine = sa.create_engine(url, **chosen)
    sa.event.listen(engine, "connect", _sqlite_connect)
    sa.event.listen(engine, "begin", _sqlite_begin)
    return engine


def postgres_engine(url: URL, options: Mapping[str, Any] | None = None) -> AsyncEngine:
    """An asyncpg engine; ``options`` go to ``create_async_engine`` (pool sizes,
    ``connect_args`` such as a ``search_path``)."""
    return create_async_engine(url, **_engine_options(options))


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


def upgrade_schema(connection: Connection) -> None:
    """Migrate to the latest revision, inside the caller's transaction (on PostgreSQL
    under an advisory lock, as replicas may start together)."""
    if connection.dialect.name == "postgresql":
        connection.execute(sa.select(sa.func.pg_advisory_xact_lock(MIGRATION_LOCK_KEY)))
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")
