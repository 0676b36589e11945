"""The SQLite reader runs on the event loop, so a locked database must not stall it;
its other errors are the writer's errors. The reads of one loop turn share a snapshot,
which must neither outlive the turn nor hide a commit the reader waited for."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import DatabaseError

from primaa.jobs.model import Job, JobState, JobStatus
from primaa.store.sql import SqlStore
from primaa.store.sqlite_access import SqliteAccess


class FailingReader:
    """Stands in for the loop-side connection, failing the way SQLite does.

    A real lock cannot be taken while the store is open (WAL readers are only
    blocked by recovery or another process in exclusive locking mode), so the
    reader fails as SQLite does when its busy timeout runs out.
    """

    in_transaction = False

    def __init__(self, message: str, code: int) -> None:
        self.message = message
        self.code = code

    def commit(self) -> None:
        pass

    def execute(self, *_: Any) -> Any:
        error = sqlite3.OperationalError(self.message)
        error.sqlite_errorcode = self.code
        raise error

    def close(self) -> None:
        pass


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    opened = SqlStore(f"sqlite:///{tmp_path / 'primaa.sqlite3'}")
    await opened.open()
    try:
        await opened.create(Job(job_id="job-1", algorithm="a", parameters={"k": 1}))
        yield opened
    finally:
        await opened.close()


def _replace_reader(store: SqlStore, reader: object) -> object:
    """Swap the reader's ``sqlite3`` connection (under the statements it runs)."""
    access = store.database
    assert isinstance(access, SqliteAccess)
    session = access._reader
    assert session is not None
    real, session._driver = session._driver, reader  # type: ignore[assignment]
    return real


async def test_a_busy_database_hands_the_status_read_to_a_thread(store: SqlStore) -> None:
    access = store.database
    assert isinstance(access, SqliteAccess)
    real = _replace_reader(store, FailingReader("database is locked", sqlite3.SQLITE_BUSY))
    try:
        before = access.commits.operations
        job = await store.get("job-1")
        assert job is not None
        assert job.parameters == {"k": 1}
        assert await store.get("no-such-job") is None
        assert await store.deliveries_for("job-1") == []
        assert await store.state("job-1") == JobState(JobStatus.PENDING, None, None)
        assert await store.state("no-such-job") is None
        assert access.commits.operations == before + 5
    finally:
        _replace_reader(store, real)


async def test_another_reader_error_is_the_writers_error_type(store: SqlStore) -> None:
    access = store.database
    assert isinstance(access, SqliteAccess)
    real = _replace_reader(store, FailingReader("file is not a database", sqlite3.SQLITE_NOTADB))
    try:
        before = access.commits.operations
        with pytest.raises(DatabaseError) as raised:
            await store.state("job-1")
        assert isinstance(raised.value.orig, sqlite3.OperationalError)
        assert access.commits.operations == before
    finally:
        _replace_reader(store, real)


async def test_the_reader_reads_what_the_writer_committed(store: SqlStore) -> None:
    state = await store.state("job-1")
    assert state is not None
    assert state.status is JobStatus.PENDING
    job = await store.get("job-1")
    assert job is not None
    assert job.parameters == {"k": 1}
    assert job.cancel_requested is False


def _set_status_elsewhere(path: Path, status: str) -> None:
    """Commit a change from another connection, as no code path of the store does."""
    with contextlib.closing(sqlite3.connect(path)) as other, other:
        other.execute("UPDATE jobs SET status = ? WHERE job_id = 'job-1'", (status,))


async def test_the_reads_of_one_loop_turn_share_a_snapshot(store: SqlStore, tmp_path: Path) -> None:
    pending = JobState(JobStatus.PENDING, None, None)
    assert await store.state("job-1") == pending
    _set_status_elsewhere(tmp_path / "primaa.sqlite3", "Running")
    # Nothing above suspended: still the turn of the first read, and its snapshot.
    assert await store.state("job-1") == pending
    await asyncio.sleep(0)
    assert await store.state("job-1") == JobState(JobStatus.RUNNING, None, None)


async def test_a_read_sees_the_commit_it_awaited_though_a_snapshot_was_open(
    store: SqlStore,
) -> None:
    assert await store.state("job-1") == JobState(JobStatus.PENDING, None, None)
    # The turn's snapshot, taken above, predates the commit awaited here.
    await store.run(
        lambda conn: conn.exec_driver_sql(
            "UPDATE jobs SET status = 'Running' WHERE job_id = 'job-1'"
        )
    )
    assert await store.state("job-1") == JobState(JobStatus.RUNNING, None, None)


async def test_the_reader_holds_no_snapshot_past_its_turn(store: SqlStore, tmp_path: Path) -> None:
    _set_status_elsewhere(tmp_path / "primaa.sqlite3", "Running")
    assert await store.state("job-1") is not None
    await asyncio.sleep(0)
    # A checkpoint that must reset the WAL fails at once (busy) while any reader holds
    # a snapshot of it.
    with contextlib.closing(sqlite3.connect(tmp_path / "primaa.sqlite3", timeout=0)) as other:
        busy, _, _ = other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    assert busy == 0
