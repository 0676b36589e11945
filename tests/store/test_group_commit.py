"""Group commit on a real SQLite file: batching, and errors that stay with their operation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

from primaa.store.group_commit import GroupCommit
from primaa.store.sql_engine import sqlite_engine
from primaa.store.sqlite_session import SqliteSession, SqliteWriter


@pytest.fixture
async def commits(tmp_path: Path) -> AsyncIterator[GroupCommit]:
    # The store's engine: the driver opens no transaction itself, the writer does.
    engine = sqlite_engine(make_url(f"sqlite:///{tmp_path / 'g.sqlite3'}"))
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (k TEXT PRIMARY KEY)")
    group = GroupCommit(SqliteWriter(engine), thread_name="test-group-commit")
    yield group
    await group.close()
    engine.dispose()


def insert(key: str) -> object:
    def op(conn: SqliteSession) -> str:
        conn.exec_driver_sql("INSERT INTO t (k) VALUES (?)", (key,))
        return key

    return op


def keys(conn: SqliteSession) -> list[str]:
    return [k for (k,) in conn.exec_driver_sql("SELECT k FROM t ORDER BY k").all()]


async def test_concurrent_operations_share_transactions(commits: GroupCommit) -> None:
    results = await asyncio.gather(*(commits.run(insert(f"k{i:03}")) for i in range(200)))
    assert results == [f"k{i:03}" for i in range(200)]
    assert await commits.run(keys) == [f"k{i:03}" for i in range(200)]
    # Queued in the same loop turn, the 200 inserts share one or a few commits.
    assert commits.operations == 201
    assert commits.transactions <= 10


async def test_a_database_error_fails_only_its_own_operation(commits: GroupCommit) -> None:
    await commits.run(insert("taken"))
    outcomes = await asyncio.gather(
        commits.run(insert("a")),
        commits.run(insert("taken")),
        commits.run(insert("b")),
        return_exceptions=True,
    )
    assert outcomes[0] == "a"
    assert isinstance(outcomes[1], IntegrityError)
    assert outcomes[2] == "b"
    assert await commits.run(keys) == ["a", "b", "taken"]


async def test_a_domain_error_keeps_the_neighbours_writes(commits: GroupCommit) -> None:
    def refuse(_: SqliteSession) -> None:
        raise KeyError("no such thing")

    outcomes = await asyncio.gather(
        commits.run(insert("a")),
        commits.run(refuse),
        commits.run(insert("b")),
        return_exceptions=True,
    )
    assert outcomes[0] == "a"
    assert isinstance(outcomes[1], KeyError)
    assert outcomes[2] == "b"
    assert await commits.run(keys) == ["a", "b"]


async def test_an_operation_that_wrote_then_failed_leaves_no_trace(commits: GroupCommit) -> None:
    """The batch runs again, one operation per transaction: its own is rolled back,
    its neighbours commit."""

    def write_then_refuse(conn: SqliteSession) -> None:
        conn.exec_driver_sql("INSERT INTO t (k) VALUES ('half-done')")
        raise KeyError("refused after writing")

    outcomes = await asyncio.gather(
        commits.run(insert("a")),
        commits.run(write_then_refuse),
        commits.run(insert("b")),
        return_exceptions=True,
    )
    assert outcomes[0] == "a"
    assert isinstance(outcomes[1], KeyError)
    assert outcomes[2] == "b"
    assert await commits.run(keys) == ["a", "b"]


async def test_an_operation_alone_that_wrote_then_failed_leaves_no_trace(
    commits: GroupCommit,
) -> None:
    """Alone in its transaction: the transaction is rolled back."""

    def write_then_refuse(conn: SqliteSession) -> None:
        conn.exec_driver_sql("INSERT INTO t (k) VALUES ('half-done')")
        raise KeyError("refused after writing")

    with pytest.raises(KeyError):
        await commits.run(write_then_refuse)
    assert await commits.run(insert("after")) == "after"
    assert await commits.run(keys) == ["after"]


async def test_a_caller_cancelled_before_its_turn_is_dropped(commits: GroupCommit) -> None:
    first = asyncio.ensure_future(commits.run(insert("first")))
    dropped = asyncio.ensure_future(commits.run(insert("dropped")))
    await asyncio.sleep(0)  # both queued, no transaction started yet
    dropped.cancel()
    assert await first == "first"
    with pytest.raises(asyncio.CancelledError):
        await dropped
    assert await commits.run(keys) == ["first"]
