"""Group commit: store operations queued while a transaction runs share the next one.

SQLite has one writer at a time, and on the default store every job costs a few
writes (create, claim, finish, callback attempt). Run one transaction each, from
the event loop through an async driver, and the thread hand-offs, begin and
commit cost milliseconds of CPU per job. Here every operation is a plain
function of a :class:`~primaa.store.sqlite_session.SqliteSession`, run by one
thread on the synchronous driver; whatever queued up while a transaction ran
goes into the next one together. Under a burst that is tens of operations per
commit; alone, an operation waits for nothing.

A domain error an operation raises (``StaleJob``, ``KeyError``...) is its own
outcome, and never leaves half of its writes behind. Most raise before they
write, and their neighbours commit as usual. One that had written (SQLite's
change counter moved) makes the batch roll back and run again one operation per
transaction, where its own error rolls its own transaction back. A savepoint
per operation would give the same guarantee for two more statements per
operation (through SQLAlchemy, which compiled them afresh each time, they cost
1.2x the service CPU of a trivial job, side by side), for a case no operation
has today. A database error likewise rolls the whole transaction back (SQLite may
already have done so) and the operations run again one per transaction, so one
bad operation fails alone.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy.exc import DBAPIError

from primaa.store.sqlite_session import SqliteSession, SqliteWriter

T = TypeVar("T")

#: A unit of work on a connection inside an open transaction.
Operation = Callable[[SqliteSession], Any]


@dataclasses.dataclass(frozen=True, slots=True)
class _Outcome:
    value: Any = None
    error: BaseException | None = None


class _WroteThenFailed(Exception):
    """An operation of a batch raised after it had written: run the batch again, each alone."""


def _run_each(conn: SqliteSession, operations: Sequence[Operation]) -> list[_Outcome]:
    outcomes = []
    for operation in operations:
        before = conn.total_changes
        try:
            outcomes.append(_Outcome(operation(conn)))
        except DBAPIError:
            raise
        except Exception as exc:
            if conn.total_changes != before:
                raise _WroteThenFailed from exc
            outcomes.append(_Outcome(error=exc))
    return outcomes


def _run_alone(conn: SqliteSession, operation: Operation) -> _Outcome:
    """The transaction's one operation: a domain error rolls the transaction back."""
    try:
        return _Outcome(operation(conn))
    except DBAPIError:
        raise
    except Exception as exc:
        conn.rollback()
        return _Outcome(error=exc)


class GroupCommit:
    """Runs operations on ``writer``'s connection in one dedicated thread, batched into
    transactions."""

    def __init__(self, writer: SqliteWriter, *, thread_name: str) -> None:
        self._writer = writer
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name)
        self._queue: list[tuple[Operation, asyncio.Future[Any]]] = []
        self._drainer: asyncio.Task[None] | None = None
        #: Transactions committed and operations run, for tests and benchmarks.
        self.transactions = 0
        self.operations = 0

    async def run(self, operation: Callable[[SqliteSession], T]) -> T:
        """Run ``operation`` in the next transaction and return what it returned.

        A caller cancelled before its transaction starts is dropped from it; once it
        started, the operation completes (and commits) without the caller.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.append((operation, future))
        if self._drainer is None or self._drainer.done():
            self._drainer = loop.create_task(self._drain(), name="primaa-group-commit")
        return await future

    async def call(self, function: Callable[[], T]) -> T:
        """Run ``function`` (no transaction) in the store's thread, after what is queued."""
        loop = asyncio.get_running_loop()
        await self.idle()
        return await loop.run_in_executor(self._thread, function)

    async def idle(self) -> None:
        """Wait until every queued operation has run."""
        while self._drainer is not None and not self._drainer.done():
            await asyncio.shield(self._drainer)

    async def close(self) -> None:
        """Run what is queued, give the connection back, then stop the thread."""
        await self.idle()
        await asyncio.get_running_loop().run_in_executor(self._thread, self._writer.close)
        self._thread.shutdown(wait=False)

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            batch = [(op, future) for op, future in self._queue if not future.cancelled()]
            self._queue = []
            if not batch:
                continue
            try:
                outcomes = await loop.run_in_executor(
                    self._thread, self._transact, [op for op, _ in batch]
                )
            except Exception as exc:  # the thread itself is gone (closed store)
                outcomes = [_Outcome(error=exc)] * len(batch)
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                if future.done():
                    continue
                if outcome.error is not None:
                    future.set_exception(outcome.error)
                else:
                    future.set_result(outcome.value)

    def _transact(self, operations: Sequence[Operation]) -> list[_Outcome]:
        """In the thread: all in one transaction, or each alone after a database error."""
        try:
            with self._writer.transaction() as conn:
                if len(operations) == 1:
                    outcomes = [_run_alone(conn, operations[0])]
                else:
                    outcomes = _run_each(conn, operations)
        except (DBAPIError, _WroteThenFailed) as exc:
            if len(operations) == 1:
                return [_Outcome(error=exc)]
            return [self._transact([operation])[0] for operation in operations]
        self.transactions += 1
        self.operations += len(operations)
        return outcomes
