"""Choose a store from the URL in the settings."""

from __future__ import annotations

from primaa.jobs.storage import JobStore
from primaa.store.memory import MemoryStore
from primaa.store.sql import SqlStore

MEMORY_URL = "memory://"


def open_store_from_url(url: str) -> JobStore:
    """``memory://``, or a SQLite/PostgreSQL URL; plain driver-less URLs get the async driver.

    The store is not opened yet: ``await store.open()`` connects and migrates.
    """
    if url == MEMORY_URL:
        return MemoryStore()
    return SqlStore(url)
