"""The one way into the SQLite database: a writer thread with group commit, and a
reader on the event loop for the hot reads, with one error policy.

Writes, and any operation needing a transaction, go to :class:`GroupCommit`: one
thread and one connection, whatever queued up while a transaction ran shares the
next one. Reads of a few rows (``read``) run
on a second connection on the event loop's own thread, which WAL lets read while
the writer writes: a primary-key lookup in the page cache takes microseconds,
while a hand-off to the thread costs a queue, a wake-up and, under load, up to a
GIL switch interval (5 ms) before the thread may run.

Error policy, for reads and writes alike:

* A domain error an operation raises is that operation's outcome: what it wrote
  is rolled back (the batch runs again one operation per transaction when it had
  written) and its neighbours commit.
* A locked or busy database (another process recovering it, or holding it in
  exclusive mode) is waited for in the store's thread, never on the event loop:
  the reader gives up after ``SQLITE_READER_BUSY_TIMEOUT_MS`` and hands the read
  to the thread, whose connection waits up to ``SQLITE_BUSY_TIMEOUT_MS``.
* Any other database error reaches the caller as SQLAlchemy's
  :class:`~sqlalchemy.exc.DBAPIError` (``OperationalError``, ``IntegrityError``...),
  whichever connection met it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import pathlib
import sqlite3
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import DBAPIError

from primaa.store.group_commit import GroupCommit
from primaa.store.rows import Rows
from primaa.store.sql_connection import SqlConnection
from primaa.store.sql_engine import SQLITE_MIN_VERSION, sqlite_engine, upgrade_schema
from primaa.store.sqlite_session import SqliteSession, SqliteWriter
from primaa.store.storage_errors import storage_error

T = TypeVar("T")

#: Bytes of the database the reader maps into memory: a read then copies no pages
#: out of the OS cache (an eighth less CPU per status read with 100,000 jobs, side
#: by side). The mapped pages count in the process's RSS, up to the file's size;
#: they are page cache, which reads through read() would fill just the same.
SQLITE_READER_MMAP_BYTES: Final = 256 * 1024 * 1024

#: Milliseconds the reader, which runs on the event loop, waits on a locked database
#: before handing the read to the store's thread: the loop's lag budget.
SQLITE_READER_BUSY_TIMEOUT_MS: Final = 20

_LOCKED: Final = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})


def _is_locked(error: sqlite3.Error) -> bool:
    # Extended result codes (SQLITE_BUSY_RECOVERY...) keep the primary code in the low byte.
    return getattr(error, "sqlite_errorcode", 0) & 0xFF in _LOCKED


class SqliteAccess:
    """Owns both connections to one SQLite file: the writer thread's and the reader."""

    def __init__(self, url: URL, options: Mapping[str, Any] | None = None) -> None:
        self.engine = sqlite_engine(url, options)
        self.dialect = self.engine.dialect
        assert url.database is not None
        self._path = pathlib.Path(url.database)
        self._writer = SqliteWriter(self.engine)
        self._commits: GroupCommit | None = None
        self._reader: SqliteSession | None = None

    @property
    def commits(self) -> GroupCommit:
        """The writer thread (its counters serve tests and benchmarks)."""
        if self._commits is None:
            raise RuntimeError("the store is not open")
        return self._commits

    async def open(self) -> None:
        """Start the writer, migrate, then open the reader."""
        if sqlite3.sqlite_version_info < SQLITE_MIN_VERSION:
            raise RuntimeError(
                f"SQLite {sqlite3.sqlite_version} is too old: claims need UPDATE ... RETURNING"
                f" (SQLite {'.'.join(map(str, SQLITE_MIN_VERSION))} or newer)"
            )
        if self._commits is None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._commits = GroupCommit(self._writer, thread_name="primaa-sqlite")
        await self.run_sqlalchemy(upgrade_schema)
        if self._reader is None:
            # Autocommit: the reader opens its transactions itself (see _reading).
            reader = sqlite3.connect(self._path, isolation_level=None)
            reader.execute(f"PRAGMA busy_timeout={SQLITE_READER_BUSY_TIMEOUT_MS}")
            reader.execute("PRAGMA query_only=ON")
            reader.execute(f"PRAGMA mmap_size={SQLITE_READER_MMAP_BYTES}")
            self._reader = SqliteSession(reader, self.dialect)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._commits is not None:
            commits, self._commits = self._commits, None
            await commits.close()
            self.engine.dispose()

    async def run(self, operation: Callable[[SqlConnection], T]) -> T:
        """Run ``operation`` in the writer thread, in a transaction (group-committed).

        A full disk or a read-only file is :class:`StorageUnavailable`.
        """
        return await _unavailable_on_storage_errors(self.commits.run(operation))

    async def run_sqlalchemy(self, operation: Callable[[Connection], T]) -> T:
        """Run ``operation`` on a SQLAlchemy connection, in a transaction of its own in the
        writer thread: for Alembic and schema inspection, not for the hot path."""
        return await _unavailable_on_storage_errors(
            self.commits.call(functools.partial(self._on_engine, operation))
        )

    def _on_engine(self, operation: Callable[[Connection], T]) -> T:
        # The engine's one connection: the writer lends it, and takes it back when next needed.
        self._writer.close()
        with self.engine.begin() as conn:
            return operation(conn)

    async def check_writable(self) -> None:
        """Write the header's ``user_version``: a real write, refused when the disk is full."""
        stamp = int(time.time()) % 2**31
        pragma = f"PRAGMA user_version = {stamp}"
        # As text: a text() statement per call would be compiled, and cached, each time.
        await self.run(lambda conn: conn.exec_driver_sql(pragma))

    async def read(self, statement: sa.Select[Any], params: Mapping[str, Any]) -> Rows:
        """The rows of ``statement``, read on the event loop (a locked database: in the
        writer thread). For small reads only: the loop waits for them."""
        try:
            fetched = self._reading().execute(statement, params)
            return Rows(fetched.keys(), fetched.all())
        except DBAPIError as exc:
            _raise_unless_locked(exc)
        return await self.run(lambda conn: Rows.of(conn.execute(statement, params)))

    async def read_first(
        self, statement: sa.Select[Any], params: Mapping[str, Any]
    ) -> Sequence[Any] | None:
        """The first row of ``statement``, read as :meth:`read` reads: the status read's
        path, without a result's column names (a status read 6.3 against 7.9 us)."""
        try:
            return self._reading().first(statement, params)
        except DBAPIError as exc:
            _raise_unless_locked(exc)
        return await self.run(lambda conn: conn.execute(statement, params).first())

    def _reading(self) -> SqliteSession:
        """The reader, in the read transaction of this turn of the event loop.

        The reads of one turn share one snapshot, which ends as the next turn starts. A
        transaction per read cost two ``fcntl`` lock calls and SQLite's snapshot set-up
        each: 3-8 us of CPU of a status read's ~116 (100,000 jobs; five fresh processes
        a side, alternating, in both orders).

        A read still sees every commit it follows: the writer thread's commit reaches
        the loop as a callback queued after the end of any transaction open before it,
        so the task that awaited the commit, and whatever it answered, reads in a newer
        snapshot. A snapshot held a turn (milliseconds) does not stall WAL checkpoints
        the way one held open would.
        """
        reader = self._reader
        if reader is None:
            raise RuntimeError("the store is not open")
        if not reader.in_transaction:
            reader.exec_driver_sql("BEGIN")
            asyncio.get_running_loop().call_soon(_end_read, reader)
        return reader


def _end_read(reader: SqliteSession) -> None:
    # A read transaction ends by commit or rollback alike; the store may be closed since.
    with contextlib.suppress(sqlite3.Error):
        reader.commit()


def _raise_unless_locked(exc: DBAPIError) -> None:
    """Reads on the loop give way to a locked database (the writer thread reads then)."""
    if not (isinstance(exc.orig, sqlite3.Error) and _is_locked(exc.orig)):
        raise exc


async def _unavailable_on_storage_errors(running: Awaitable[T]) -> T:
    """A full disk or a read-only file is :class:`StorageUnavailable`."""
    try:
        return await running
    except DBAPIError as exc:
        if (unavailable := storage_error(exc)) is not None:
            raise unavailable from exc
        raise
