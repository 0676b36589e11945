"""Admission: whether a new job may be taken, so the queue stays bounded.

Two reasons to refuse: too many unfinished jobs (429, the client retries later)
and a service that is draining before it stops (503, retry here or elsewhere).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from primaa.jobs.errors import ShuttingDown, TooManyJobs
from primaa.jobs.storage import JobStore

#: Seconds a client is told to wait when it submits to a service that is stopping.
SHUTDOWN_RETRY_AFTER = 5
#: Seconds a client is told to wait when the queue is full.
FULL_RETRY_AFTER = 5
#: Least time between two counts of the unfinished jobs in the store.
RECOUNT_SECONDS = 1.0


class Admission:
    """Counts unfinished jobs against ``max_unfinished`` and refuses the excess.

    The store count (the only one that sees other replicas and finished jobs) is
    refreshed at most once a second; between refreshes the local count is kept
    exact: submissions being stored count as unfinished from the moment they are
    admitted, so concurrent submissions cannot all see the same room. A refresh
    may count a job twice (stored during the query), never miss one.
    """

    def __init__(self, store: JobStore, *, max_unfinished: int, clock: Callable[[], float]) -> None:
        self._store = store
        self._max_unfinished = max_unfinished
        self._clock = clock
        self._unfinished = 0
        self._counted_at = float("-inf")
        #: Submissions admitted but not yet stored, and how many were stored in all.
        self._creating = 0
        self._created_total = 0
        self._lock = asyncio.Lock()
        self._closed = False

    @property
    def closed(self) -> bool:
        """True once the service began to drain: no new jobs."""
        return self._closed

    def close(self) -> None:
        self._closed = True

    def check_open(self) -> None:
        if self._closed:
            raise ShuttingDown(retry_after=SHUTDOWN_RETRY_AFTER)

    @contextlib.asynccontextmanager
    async def admit(self) -> AsyncIterator[None]:
        """Hold a place for one job while it is stored; raise 429 or 503 instead.

        The place counts as an unfinished job once the body completes; an error
        in the body (the job was not stored) gives it back.
        """
        self.check_open()
        async with self._lock:
            now = self._clock()
            if now - self._counted_at > RECOUNT_SECONDS:
                created_before = self._created_total
                counts = await self._store.count_by_status()
                self._unfinished = sum(
                    n for (_, status), n in counts.items() if not status.is_terminal
                ) + (self._created_total - created_before)
                self._counted_at = now
            if self._unfinished + self._creating >= self._max_unfinished:
                raise TooManyJobs(self._max_unfinished, retry_after=FULL_RETRY_AFTER)
            self._creating += 1
        try:
            yield
        finally:
            self._creating -= 1
        self._unfinished += 1
        self._created_total += 1

    def job_ended(self) -> None:
        """A job reached a final state (here, or found so by a lease sweep)."""
        self._unfinished = max(0, self._unfinished - 1)
