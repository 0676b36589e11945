"""SQLAlchemy statements compiled once and run by the SQLite driver: the writer's
transactions and the status reader.

SQLAlchemy's ``Connection.execute`` spends 50-100 us of CPU per statement before
SQLite sees it (the statement's cache key, an execution context, a result), and a
trivial job runs about ten statements in the writer thread, which shares the GIL
with the event loop. The store's statements are built once (module constants, a
few per filter), so here each is compiled once per shape and then run on the
``sqlite3`` connection itself: its parameters bound with SQLAlchemy's own bind
processors (JSON as text), its rows returned as tuples (JSON as text, booleans as
integers, which :mod:`primaa.store.rows` decodes either way). Statements with
``IN`` lists are expanded per call by SQLAlchemy (``construct_expanded_state``).

Errors are SQLAlchemy's :class:`~sqlalchemy.exc.DBAPIError` subclasses, as through
SQLAlchemy: the store's error policy does not know which way a statement ran.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Final, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.sql.compiler import SQLCompiler

from primaa.store.sql_connection import Parameters

#: Compiled shapes kept; a statement built per call (none is, today) would only
#: cost its compilation.
_MAX_COMPILED: Final = 1024

_Bind = tuple[str, Callable[[Any], Any] | None, Any]
_NO_VALUES: Final[Mapping[str, Any]] = {}


class _Compiled(NamedTuple):
    sql: str
    #: Per ``?`` in order: the parameter's name, its bind processor, its own value.
    binds: tuple[_Bind, ...]
    #: The names alone, when no parameter has a processor or a value of its own.
    plain: tuple[str, ...] | None
    #: Set when the statement has ``IN`` lists, expanded per call.
    expanding: SQLCompiler | None


class Fetched:
    """A statement's outcome: its rows (all read) and the rows it changed."""

    __slots__ = ("_keys", "_rows", "rowcount")

    def __init__(self, keys: tuple[str, ...], rows: list[Any], rowcount: int) -> None:
        self._keys = keys
        self._rows = rows
        self.rowcount = rowcount

    def keys(self) -> tuple[str, ...]:
        return self._keys

    def all(self) -> list[Any]:
        return self._rows

    def first(self) -> Any:
        return self._rows[0] if self._rows else None

    def scalar(self) -> Any:
        return self._rows[0][0] if self._rows else None

    def scalars(self) -> _Scalars:
        return _Scalars(row[0] for row in self._rows)


class _Scalars(list[Any]):
    def all(self) -> list[Any]:
        return self


class SqliteSession:
    """A ``sqlite3`` connection running SQLAlchemy statements (see the module's docstring):
    the writer's, inside its transactions, and the status reader's, in one read transaction
    per turn of the event loop."""

    def __init__(self, driver: sqlite3.Connection, dialect: Dialect) -> None:
        self._driver = driver
        self._dialect = dialect
        self._compiled: dict[Any, _Compiled] = {}
        #: The column names of each SQL text run, from its first cursor.
        self._keys: dict[str, tuple[str, ...]] = {}

    @property
    def total_changes(self) -> int:
        """Rows changed on this connection so far (how group commit sees a write)."""
        return self._driver.total_changes

    @property
    def in_transaction(self) -> bool:
        return self._driver.in_transaction

    def commit(self) -> None:
        self._driver.commit()

    def rollback(self) -> None:
        self._driver.rollback()

    def close(self) -> None:
        self._driver.close()

    def execute(self, statement: sa.Executable, parameters: Parameters | None = None, /) -> Fetched:
        if parameters is None or isinstance(parameters, Mapping):
            values: Mapping[str, Any] = parameters or _NO_VALUES
            sql, args = self._bind(self._compile(statement, values), values)
            try:
                return self._fetched(sql, self._driver.execute(sql, args))
            except sqlite3.Error as exc:
                raise DBAPIError.instance(sql, values, exc, sqlite3.Error) from exc
        if not parameters:
            return Fetched((), [], 0)
        compiled = self._compile(statement, parameters[0])
        bound = [self._bind(compiled, values) for values in parameters]
        sql = bound[0][0]
        try:
            return self._fetched(sql, self._driver.executemany(sql, [args for _, args in bound]))
        except sqlite3.Error as exc:
            raise DBAPIError.instance(sql, parameters, exc, sqlite3.Error) from exc

    def first(self, statement: sa.Executable, values: Mapping[str, Any]) -> Sequence[Any] | None:
        """The first row of a query, or ``None``, read to its end (no read left open)."""
        sql, args = self._bind(self._compile(statement, values), values)
        try:
            rows: list[Sequence[Any]] = self._driver.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise DBAPIError.instance(sql, values, exc, sqlite3.Error) from exc
        return rows[0] if rows else None

    def exec_driver_sql(self, sql: str, args: Sequence[Any] = ()) -> Fetched:
        try:
            return self._fetched(sql, self._driver.execute(sql, args))
        except sqlite3.Error as exc:
            raise DBAPIError.instance(sql, args, exc, sqlite3.Error) from exc

    def _fetched(self, sql: str, cursor: sqlite3.Cursor) -> Fetched:
        if cursor.description is None:
            return Fetched((), [], cursor.rowcount)
        rows = cursor.fetchall()
        keys = self._keys.get(sql)
        if keys is None:
            if len(self._keys) >= _MAX_COMPILED:
                self._keys.clear()
            keys = self._keys[sql] = tuple(column[0] for column in cursor.description)
        return Fetched(keys, rows, cursor.rowcount)

    def _compile(self, statement: sa.Executable, values: Mapping[str, Any]) -> _Compiled:
        # An INSERT's or UPDATE's columns may follow the names given values (SQLAlchemy
        # adds a table column that has a value): one shape per set of names.
        key: Any = (statement, tuple(values)) if isinstance(statement, sa.ValuesBase) else statement
        compiled = self._compiled.get(key)
        if compiled is None:
            if len(self._compiled) >= _MAX_COMPILED:
                self._compiled.clear()
            compiled = self._compiled[key] = self._compile_new(statement, values)
        return compiled

    def _compile_new(self, statement: sa.Executable, values: Mapping[str, Any]) -> _Compiled:
        if not isinstance(statement, sa.ClauseElement):
            raise TypeError(f"cannot compile {statement!r}")
        compiled = statement.compile(dialect=self._dialect, column_keys=list(values))
        assert isinstance(compiled, SQLCompiler)
        # SQLAlchemy's own processors, per bind (tuple-typed binds, which have several,
        # are not used by the store).
        processors: Mapping[str, Any] = compiled._bind_processors
        binds = tuple(
            (name, processors.get(name), compiled.binds[name].effective_value)
            for name in compiled.positiontup or ()
        )
        expanding = any(compiled.binds[name].expanding for name, _, _ in binds)
        plain = all(processor is None and own is None for _, processor, own in binds)
        return _Compiled(
            compiled.string,
            binds,
            tuple(name for name, _, _ in binds) if plain else None,
            compiled if expanding else None,
        )

    @staticmethod
    def _bind(compiled: _Compiled, values: Mapping[str, Any]) -> tuple[str, list[Any]]:
        if compiled.expanding is not None:
            state = compiled.expanding.construct_expanded_state(values)
            processors: Mapping[str, Any] = state.processors
            args = [
                processor(value) if (processor := processors.get(name)) else value
                for name, value in zip(
                    state.positiontup or (), state.positional_parameters, strict=True
                )
            ]
            return state.statement, args
        if compiled.plain is not None:
            return compiled.sql, [values[name] for name in compiled.plain]
        args = []
        for name, processor, own in compiled.binds:
            value = values.get(name, own)
            args.append(value if processor is None else processor(value))
        return compiled.sql, args


class SqliteWriter:
    """Holds the engine's one connection for the writer thread and opens its transactions."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._proxied: PoolProxiedConnection | None = None
        self._session: SqliteSession | None = None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[SqliteSession]:
        """BEGIN IMMEDIATE, commit on leaving, roll back on an exception."""
        session = self._session or self._checkout()
        session.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            yield session
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                session.rollback()
            raise
        try:
            session.commit()
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                session.rollback()
            raise DBAPIError.instance("COMMIT", (), exc, sqlite3.Error) from exc

    def close(self) -> None:
        """Give the connection back to the engine's pool (to be disposed of)."""
        if self._proxied is not None:
            proxied, self._proxied, self._session = self._proxied, None, None
            proxied.close()

    def _checkout(self) -> SqliteSession:
        self._proxied = self._engine.raw_connection()
        driver = self._proxied.driver_connection
        assert isinstance(driver, sqlite3.Connection)
        self._session = SqliteSession(driver, self._engine.dialect)
        return self._session
