"""The SQLite status reader runs on the event loop, so a locked database must not stall it."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from primaa.jobs.model import Job
from primaa.store.sql import SqlStore


class LockedReader:
    """Stands in for the loop-side connection while another process holds the database.

    A real lock cannot be taken while the store is open (WAL readers are only
    blocked by recovery or another process in exclusive locking mode), so the
    reader fails the way SQLite does when its busy timeout runs out.
    """

    def execute(self, *_: Any) -> Any:
        raise sqlite3.OperationalError("database is locked")

    def close(self) -> None:
        pass


async def test_a_busy_database_hands_the_status_read_to_a_thread(tmp_path: Path) -> None:
    store = SqlStore(f"sqlite:///{tmp_path / 'primaa.sqlite3'}")
    await store.open()
    try:
        await store.create(Job(job_id="job-1", algorithm="a", parameters={"k": 1}))
        real_reader = store._reader
        store._reader = LockedReader()  # type: ignore[assignment]
        job = await store.get("job-1")
        assert job is not None
        assert job.parameters == {"k": 1}
        assert await store.get("no-such-job") is None
        store._reader = real_reader
    finally:
        await store.close()
