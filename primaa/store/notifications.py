"""Wake-ups between replicas: LISTEN on the store's PostgreSQL database.

The database notifies (triggers of migration 0004) when a job becomes Pending and
when a delivery is queued or given back; every replica listening wakes its claim
loop at once instead of at its next poll. Polling stays, as the fallback for a
lost notification: a wake-up is only a hint to look now.

One connection of its own, outside the store's pool (a listening connection must
stay open). When it is lost, the listener reconnects with backoff and wakes every
loop once it listens again, for whatever was notified meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from typing import Any, Final

import structlog
from sqlalchemy.engine import URL

log = structlog.get_logger(__name__)

#: Channels of the triggers: a job to claim, a delivery to send.
JOBS_CHANNEL: Final = "primaa_jobs"
DELIVERIES_CHANNEL: Final = "primaa_deliveries"

#: Seconds between checks that a quiet listening connection is still alive.
HEALTH_CHECK_SECONDS: Final = 30.0
RECONNECT_FIRST_DELAY: Final = 0.5
RECONNECT_MAX_DELAY: Final = 30.0


class PostgresNotifications:
    """Calls back on NOTIFY for this store's schema, on any replica's write."""

    def __init__(self, url: URL, connect_args: Mapping[str, Any] | None = None) -> None:
        self._dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._connect_args = dict(connect_args or {})
        self._callbacks: dict[str, list[Callable[[], None]]] = {}
        self._task: asyncio.Task[None] | None = None
        #: Set while the connection listens (tests and health wait for it).
        self.listening = asyncio.Event()
        #: Notifications received for this schema, per channel.
        self.received: dict[str, int] = {}
        #: The server process of the listening connection (what an operator sees in
        #: ``pg_stat_activity``); ``None`` while not connected.
        self.backend_pid: int | None = None

    def on(self, channel: str, callback: Callable[[], None]) -> None:
        self._callbacks.setdefault(channel, []).append(callback)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="primaa-notifications")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _wake(self, channel: str) -> None:
        self.received[channel] = self.received.get(channel, 0) + 1
        for callback in self._callbacks.get(channel, ()):
            callback()

    def _wake_all(self) -> None:
        for callbacks in self._callbacks.values():
            for callback in callbacks:
                callback()

    async def _run(self) -> None:
        delay = RECONNECT_FIRST_DELAY
        while True:
            try:
                await self._listen()
                delay = RECONNECT_FIRST_DELAY
            except Exception as exc:
                # The network, or asyncpg's own errors (a refused login, a server
                # shutting down): polling carries on meanwhile.
                log.warning("notifications_lost", error=f"{type(exc).__name__}: {exc}")
            finally:
                self.listening.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_DELAY)

    async def _listen(self) -> None:
        """Listen until the connection is lost; return then (or raise)."""
        import asyncpg  # the postgres extra; only a PostgreSQL store gets here

        conn = await asyncpg.connect(self._dsn, **self._connect_args)
        try:
            schema = await conn.fetchval("SELECT current_schema()")
            self.backend_pid = conn.get_server_pid()
            lost = asyncio.Event()
            conn.add_termination_listener(lambda _conn: lost.set())

            def notified(_conn: object, _pid: int, channel: str, payload: str) -> None:
                if payload == schema:
                    self._wake(channel)

            for channel in self._callbacks:
                await conn.add_listener(channel, notified)
            self.listening.set()
            log.info("notifications_listening", channels=sorted(self._callbacks))
            # Whatever was notified while nobody listened: look once now.
            self._wake_all()
            while not lost.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lost.wait(), HEALTH_CHECK_SECONDS)
                if not lost.is_set():
                    await conn.fetchval("SELECT 1", timeout=HEALTH_CHECK_SECONDS / 3)
            log.warning("notifications_lost", error="the connection closed")
        finally:
            self.backend_pid = None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 5)
