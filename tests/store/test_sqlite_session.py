"""The SQLite writer's own execution of SQLAlchemy statements agrees with SQLAlchemy's."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import IntegrityError, OperationalError

from primaa.store.sql_engine import sqlite_engine
from primaa.store.sqlite_session import SqliteSession, SqliteWriter

metadata = sa.MetaData()
things = sa.Table(
    "things",
    metadata,
    sa.Column("id", sa.String, primary_key=True),
    sa.Column("doc", sa.JSON, nullable=False),
    sa.Column("maybe", sa.JSON(none_as_null=True)),
    sa.Column("flag", sa.Boolean, nullable=False),
    sa.Column("size", sa.Double),
    sa.Column("note", sa.String),
)

INSERT = things.insert()
BY_IDS = sa.select(things).where(things.c.id.in_(sa.bindparam("ids", expanding=True)))
NOT_THESE = sa.select(things.c.id).where(things.c.id.notin_(["b", "c"])).order_by(things.c.id)
FLAG = (
    things.update()
    .where(things.c.id == sa.bindparam("key"))
    .values(flag=sa.bindparam("new_flag"), size=things.c.size + 1)
    .returning(things.c.id, things.c.flag)
)
ROWS: list[dict[str, Any]] = [
    {"id": "a", "doc": {"k": [1, 2]}, "maybe": None, "flag": True, "size": 1.5, "note": "x"},
    {"id": "b", "doc": [], "maybe": {"n": None}, "flag": False, "size": None, "note": None},
    {"id": "c", "doc": None, "maybe": None, "flag": False, "size": 3.0, "note": "é"},
]


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = sqlite_engine(make_url(f"sqlite:///{tmp_path / 's.sqlite3'}"))
    with engine.begin() as conn:
        metadata.create_all(conn)
    yield engine
    engine.dispose()


def _stored(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        raw = conn.exec_driver_sql(
            "SELECT id, doc, maybe, flag, size, note FROM things ORDER BY id"
        )
        return [tuple(row) for row in raw]


def test_writes_store_what_sqlalchemy_stores(engine: Engine, tmp_path: Path) -> None:
    writer = SqliteWriter(engine)
    with writer.transaction() as session:
        session.execute(INSERT, ROWS[0])
        session.execute(INSERT, ROWS[1:])  # executemany
    writer.close()
    ours = _stored(engine)

    other = sqlite_engine(make_url(f"sqlite:///{tmp_path / 'other.sqlite3'}"))
    with other.begin() as conn:
        metadata.create_all(conn)
        conn.execute(INSERT, ROWS[0])
        conn.execute(INSERT, ROWS[1:])
    try:
        assert ours == _stored(other)
    finally:
        other.dispose()
    # JSON null and SQL NULL kept apart as SQLAlchemy keeps them.
    assert ours[2][1] == "null"
    assert ours[0][2] is None


def test_reads_lists_and_returning(engine: Engine) -> None:
    writer = SqliteWriter(engine)
    with writer.transaction() as session:
        session.execute(INSERT, ROWS)
        found = session.execute(BY_IDS, {"ids": ["c", "a"]})
        assert list(found.keys()) == [c.name for c in things.columns]
        assert sorted(row[0] for row in found.all()) == ["a", "c"]
        assert session.execute(BY_IDS, {"ids": []}).all() == []
        assert session.execute(NOT_THESE).scalars().all() == ["a"]
        changed = session.execute(FLAG, {"key": "b", "new_flag": True})
        assert changed.all() == [("b", 1)]
        assert session.execute(FLAG, {"key": "nobody", "new_flag": True}).first() is None
        count = session.execute(things.delete().where(things.c.flag.is_(False)))
        assert count.rowcount == 1
        assert session.execute(sa.select(sa.func.count()).select_from(things)).scalar() == 2
    writer.close()


def test_an_error_is_sqlalchemys_and_rolls_the_transaction_back(engine: Engine) -> None:
    writer = SqliteWriter(engine)

    def insert_twice() -> None:
        with writer.transaction() as session:
            session.execute(INSERT, ROWS[0])
            session.execute(INSERT, ROWS[0])

    def select_nothing() -> None:
        with writer.transaction() as session:
            session.exec_driver_sql("SELECT nothing FROM nowhere")

    with pytest.raises(IntegrityError):
        insert_twice()
    with pytest.raises(OperationalError):
        select_nothing()
    with writer.transaction() as session:
        assert session.execute(sa.select(things.c.id)).all() == []
    writer.close()


def test_the_writer_lends_its_connection_back(engine: Engine) -> None:
    """The engine has one connection: the writer gives it back when closed, and takes it
    again at its next transaction."""
    writer = SqliteWriter(engine)
    with writer.transaction() as session:
        session.execute(INSERT, ROWS[0])
    writer.close()
    with engine.begin() as conn:
        assert conn.execute(sa.select(things.c.id)).scalars().all() == ["a"]
    with writer.transaction() as session:
        assert isinstance(session, SqliteSession)
        assert session.execute(sa.select(things.c.id)).scalars().all() == ["a"]
    writer.close()


def test_an_update_sets_the_columns_given_values_as_sqlalchemy_does(engine: Engine) -> None:
    """One UPDATE statement run with and without a value for a column: two shapes."""
    touch = things.update().where(things.c.id == sa.bindparam("key")).values(flag=True)
    writer = SqliteWriter(engine)
    with writer.transaction() as session:
        session.execute(INSERT, ROWS)
        session.execute(touch, {"key": "a"})
        session.execute(touch, {"key": "b", "note": "set too"})
        session.execute(touch, {"key": "c"})
    writer.close()
    assert [(row[0], row[3], row[5]) for row in _stored(engine)] == [
        ("a", 1, "x"),
        ("b", 1, "set too"),
        ("c", 1, "é"),
    ]
