"""The reads the event loop waits for use an index: a table scan per request grows with
the store, and a test database of a few rows would never show it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

from primaa.store import statements as st
from primaa.store.sql import SqlStore

#: What ``GET /status/{id}``, ``GET /jobs/{id}`` and ``GET /jobs/{id}/result`` read.
PER_REQUEST = {
    "GET_STATE": st.GET_STATE,
    "GET_JOB": st.GET_JOB,
    "JOB_WITH_DELIVERIES": st.JOB_WITH_DELIVERIES,
    "DELIVERIES_FOR_JOB": st.DELIVERIES_FOR_JOB,
    "GET_RESULT": st.GET_RESULT,
}


@pytest.fixture
async def database(tmp_path: Path) -> Path:
    path = tmp_path / "primaa.sqlite3"
    store = SqlStore(f"sqlite:///{path}")
    await store.open()
    await store.close()
    return path


@pytest.mark.parametrize("name", PER_REQUEST)
def test_per_request_reads_search_an_index(database: Path, name: str) -> None:
    statement: sa.Select[object] = PER_REQUEST[name]
    compiled = statement.compile(dialect=sqlite.dialect())
    connection = sqlite3.connect(database)
    try:
        plan = [
            row[-1]
            for row in connection.execute(
                f"EXPLAIN QUERY PLAN {compiled.string}", [None] * len(compiled.positiontup or ())
            )
        ]
    finally:
        connection.close()
    assert plan
    assert not [step for step in plan if step.startswith(("SCAN", "MATERIALIZE"))], plan
