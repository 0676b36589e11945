"""A store that cannot write says so as StorageUnavailable, for the API to answer 507/503."""

from __future__ import annotations

from pathlib import Path

import pytest

from primaa.jobs.errors import StorageUnavailable
from primaa.jobs.model import Job
from primaa.store.sql import SqlStore


async def test_a_read_only_database_is_storage_unavailable_not_a_crash(tmp_path: Path) -> None:
    store = SqlStore(f"sqlite:///{tmp_path / 'primaa.sqlite3'}")
    await store.open()
    try:
        await store.check_writable()
        await store.run(lambda conn: conn.exec_driver_sql("PRAGMA query_only = ON"))
        with pytest.raises(StorageUnavailable) as refused:
            await store.create(Job(job_id="j1", algorithm="a", parameters={}))
        assert not refused.value.full
        assert refused.value.cause == "the database is read-only"
        with pytest.raises(StorageUnavailable):
            await store.check_writable()
        assert await store.get("j1") is None
    finally:
        await store.close()
