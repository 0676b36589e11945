"""Choose a store from the URL in the settings."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from primaa.jobs.storage import JobStore
from primaa.store.file_lock import hold_sqlite_database
from primaa.store.memory import MemoryStore
from primaa.store.notifications import PostgresNotifications
from primaa.store.sql import SqlStore
from primaa.store.sql_engine import store_url

MEMORY_URL = "memory://"


def check_store_url(url: str) -> None:
    """Raise ``ValueError`` saying how to fix a URL no store can open (scheme, driver)."""
    if url == MEMORY_URL:
        return
    try:
        parsed = store_url(url)
    except ValueError as exc:
        raise ValueError(
            f"{exc}; database_url (PRIMAA_DATABASE_URL) takes sqlite:///PATH,"
            " postgresql://USER@HOST/DB or memory://"
        ) from None
    if parsed.get_backend_name() == "postgresql" and importlib.util.find_spec("asyncpg") is None:
        raise ValueError(
            "PostgreSQL needs its driver: pip install 'primaa[postgres]'"
            " (or use the default SQLite store)"
        )


def open_store_from_url(url: str) -> JobStore:
    """``memory://``, or a SQLite/PostgreSQL URL; plain driver-less URLs get the async driver.

    The store is not opened yet: ``await store.open()`` connects and migrates.
    """
    if url == MEMORY_URL:
        return MemoryStore()
    return SqlStore(url)


def notifications_for(store: JobStore) -> PostgresNotifications | None:
    """The wake-ups between replicas of a PostgreSQL store; ``None`` where one process
    owns the store (SQLite, memory) and wakes its own loops."""
    if isinstance(store, SqlStore) and store.dialect == "postgresql":
        return PostgresNotifications(store.url, store.engine_options.get("connect_args"))
    return None


def hold_store(url: str) -> int | None:
    """For ``primaa serve``: lock a SQLite database to this process (see
    :mod:`primaa.store.file_lock`); other stores need no lock."""
    if url == MEMORY_URL:
        return None
    parsed = store_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    return hold_sqlite_database(Path(parsed.database))
