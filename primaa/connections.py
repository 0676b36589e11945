"""Connections that cannot take the service down: slow, idle and too many clients.

aiohttp closes a connection whose request headers or next request do not come
within its keep-alive timeout, but nothing bounds a request body that trickles in,
nor how many connections are held: past the process's file-descriptor limit,
``accept()`` fails, every new client (the load balancer's health probe too) is
refused, and asyncio logs each failed attempt.

:class:`ConnectionGuard` wraps each connection's protocol. It keeps the number of
open connections under a cap; when full, a new connection takes the place of the
one that has waited longest without a request in progress (a slow or idle client),
or is refused when every connection is busy. A request whose body arrives slower
than ``min_body_rate`` over ``body_timeout`` seconds is cut off, and a connection
without a complete request for ``idle_timeout`` seconds (idle, or trickling its
headers) is closed.
"""

from __future__ import annotations

import asyncio
import resource
import socket
import time
from collections.abc import Callable
from typing import Any, cast

import structlog
from aiohttp import web

log = structlog.get_logger(__name__)

#: File descriptors kept for everything that is not a client connection (the
#: database, spool files, worker pipes, outgoing fetches and callbacks).
RESERVED_FDS = 256
#: Connections accepted per wake-up of the listening socket (well below the reserve).
ACCEPT_BATCH = 64
#: Seconds between two log lines about the same refused or dropped connections.
LOG_INTERVAL = 10.0
#: ``idle_since`` of a connection with a request in progress.
BUSY = float("inf")


def default_connection_limit(reserved: int = RESERVED_FDS) -> int:
    """Connections the process can hold: its file-descriptor limit less a reserve."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 10_000
    return soft - reserved if soft > 2 * reserved else max(16, soft // 2)


class _RateLimitedLog:
    """Counts an event and logs it at most once per interval, with the count."""

    def __init__(self, event: str, interval: float = LOG_INTERVAL) -> None:
        self._event = event
        self._interval = interval
        self._count = 0
        self._last = float("-inf")

    def __call__(self, **fields: Any) -> None:
        self._count += 1
        now = time.monotonic()
        if now - self._last >= self._interval:
            log.warning(self._event, count=self._count, **fields)
            self._count = 0
            self._last = now


class _Guarded(asyncio.Protocol):
    """One connection: aiohttp's protocol inside, its activity seen from outside."""

    def __init__(self, guard: ConnectionGuard, factory: Callable[[], asyncio.Protocol]) -> None:
        self._guard = guard
        self._factory = factory
        self.inner: Any = None
        self.transport: asyncio.Transport | None = None
        #: Since when it has had no request in progress (``BUSY``: it has one).
        self.idle_since = time.monotonic()
        self.window_start = 0.0
        self.window_bytes = 0

    # The transport's calls, passed on.
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self.transport = cast(asyncio.Transport, transport)
        if not self._guard.admit(self):
            self.transport.abort()
            return
        self.inner = self._factory()
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.window_bytes += len(data)
        if self.inner is not None:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        self._guard.release(self)
        if self.inner is not None:
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    # What the guard asks.
    def in_request(self) -> bool:
        return bool(getattr(self.inner, "_request_in_progress", False))

    def awaiting_body(self) -> bool:
        """A request is in progress and its body has not all arrived yet."""
        request = getattr(self.inner, "_current_request", None)
        return self.in_request() and request is not None and not request.content.is_eof()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class ConnectionGuard:
    def __init__(
        self,
        *,
        max_connections: int,
        idle_timeout: float,
        body_timeout: float,
        min_body_rate: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_connections = max_connections
        self._idle_timeout = idle_timeout
        self._body_timeout = body_timeout
        self._min_body_rate = min_body_rate
        self._clock = clock
        self._open: set[_Guarded] = set()
        self._evicted = _RateLimitedLog("connections_evicted")
        self._refused = _RateLimitedLog("connections_refused")
        self._too_slow = _RateLimitedLog("request_body_too_slow")

    def __len__(self) -> int:
        return len(self._open)

    def protocol_factory(self, factory: Callable[[], asyncio.Protocol]) -> Callable[[], _Guarded]:
        """Wrap aiohttp's protocol factory (``AppRunner.server``)."""
        return lambda: _Guarded(self, factory)

    def admit(self, connection: _Guarded) -> bool:
        if len(self._open) >= self.max_connections:
            idle = [c for c in self._open if not c.in_request() and c.idle_since != BUSY]
            if not idle:
                self._refused(limit=self.max_connections)
                return False
            oldest = min(idle, key=lambda c: c.idle_since)
            self._open.discard(oldest)
            oldest.close()
            self._evicted(limit=self.max_connections)
        connection.idle_since = connection.window_start = self._clock()
        self._open.add(connection)
        return True

    def release(self, connection: _Guarded) -> None:
        self._open.discard(connection)

    def sweep(self) -> None:
        """Cut off request bodies that come slower than the minimum rate; note idle times."""
        now = self._clock()
        for connection in list(self._open):
            if not connection.in_request():
                if connection.idle_since == BUSY:
                    connection.idle_since = now
                elif now - connection.idle_since > self._idle_timeout:
                    # No complete request for that long: idle, or sending its headers
                    # slowly. aiohttp closes these too, but only from 3.14.3 on.
                    self._open.discard(connection)
                    connection.close()
                    continue
                connection.window_start, connection.window_bytes = now, 0
                continue
            connection.idle_since = BUSY
            if now - connection.window_start < self._body_timeout:
                continue
            slow = connection.window_bytes < self._min_body_rate * self._body_timeout
            if slow and connection.awaiting_body():
                self._open.discard(connection)
                connection.close()
                self._too_slow(body_timeout=self._body_timeout, min_rate=self._min_body_rate)
            else:
                connection.window_start, connection.window_bytes = now, 0

    async def run(self, interval: float = 1.0) -> None:
        while True:
            await asyncio.sleep(interval)
            self.sweep()


def quiet_accept_errors(loop: asyncio.AbstractEventLoop) -> None:
    """Log "accept() out of system resource" once per interval, not once per attempt."""
    accept_errors = _RateLimitedLog("accept_failed")
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if "accept() out of system resource" in str(context.get("message", "")):
            accept_errors(error=str(context.get("exception")))
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


class GuardedSite(web.BaseSite):
    """aiohttp's ``SockSite``, with every connection's protocol wrapped by ``guard``."""

    def __init__(self, runner: web.BaseRunner, sock: socket.socket, guard: ConnectionGuard) -> None:
        # asyncio accepts up to ``backlog`` sockets per wake-up before any of them is
        # handled: kept small, a burst cannot hold more descriptors than the reserve.
        super().__init__(runner, backlog=ACCEPT_BATCH)
        self._sock = sock
        self._guard = guard

    @property
    def name(self) -> str:
        host, port = self._sock.getsockname()[:2]
        return f"http://{host}:{port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self._guard.protocol_factory(server), sock=self._sock, backlog=self._backlog
        )
