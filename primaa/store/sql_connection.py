"""What a store operation may do with its transaction: execute statements, read results.

A SQLAlchemy :class:`~sqlalchemy.engine.Connection` is one (PostgreSQL, through the
async engine's ``run_sync``); :class:`~primaa.store.sqlite_session.SqliteSession` is
the other (the SQLite writer, which runs the same statements on the driver).
Operations use only this much, so they run unchanged on both.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import sqlalchemy as sa

#: One set of bound values, or several for an executemany.
Parameters = Mapping[str, Any] | Sequence[Mapping[str, Any]]


class ScalarsLike(Protocol):
    def __iter__(self) -> Iterator[Any]: ...

    def all(self) -> Sequence[Any]: ...


class ResultLike(Protocol):
    """The part of SQLAlchemy's ``CursorResult`` the store reads."""

    @property
    def rowcount(self) -> int: ...

    def keys(self) -> Iterable[str]: ...

    def all(self) -> Sequence[Any]: ...

    def first(self) -> Any: ...

    def scalar(self) -> Any: ...

    def scalars(self) -> ScalarsLike: ...


class SqlConnection(Protocol):
    """A connection inside an open transaction."""

    def execute(
        self, statement: sa.Executable, parameters: Parameters | None = None, /
    ) -> ResultLike: ...

    def exec_driver_sql(self, sql: str, /) -> ResultLike:
        """SQL text as it is, for a statement SQLAlchemy has no construct for (a PRAGMA)."""
        ...
