"""``primaa serve``'s event loop: listen, and on SIGTERM or SIGINT drain before stopping.

aiohttp's ``run_app`` closes the listening socket as its first step on a signal,
so a load balancer would meet refused connections instead of an answer, and the
running jobs would be cut at once. Here the socket stays open while the service
drains: submissions get 503 with ``Retry-After``, ``GET /health`` says
``draining`` (503), reads keep working, running jobs get ``shutdown_grace_seconds``
to finish, and the callbacks due are sent once more. Only then is the site
stopped and every resource closed (``cleanup_ctx``), which hands the jobs still
running back as Pending. A second signal cuts the grace short.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import socket
import time
from collections.abc import Coroutine
from typing import Any

import structlog
from aiohttp import web

from primaa.appkeys import DISPATCHER, OUTBOX, SETTINGS, STORE
from primaa.connections import (
    ConnectionGuard,
    GuardedSite,
    default_connection_limit,
    quiet_accept_errors,
)
from primaa.jobs.storage import DeliveryStore
from primaa.webhooks.outbox import Outbox

log = structlog.get_logger(__name__)

#: Seconds open connections get to finish once the drain is over and the site stops.
CONNECTION_GRACE = 5.0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StartupError(Exception):
    """The service cannot start; the message says what to change."""


def listen(host: str, port: int) -> socket.socket:
    """Bind the listening socket before anything else starts (store, worker processes),
    so that a port in use is one clear error, not a traceback after a slow start."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        return socket.create_server((host, port), family=family[0][0], backlog=1024)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise StartupError(
            f"cannot listen on {host}:{port}: {reason}; stop what uses it, or choose"
            " another port with --port or PRIMAA_PORT"
        ) from None


async def serve(app: web.Application, *, sock: socket.socket) -> None:
    """Serve ``app`` on ``sock`` until a stop signal, then drain it and clean up."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    hurry = asyncio.Event()

    def on_signal(signum: signal.Signals) -> None:
        log.info("stop_signal", signal=signum.name, hurry=stop.is_set())
        (hurry if stop.is_set() else stop).set()

    settings = app[SETTINGS]
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        shutdown_timeout=CONNECTION_GRACE,
        keepalive_timeout=settings.keepalive_timeout,
    )
    guard = ConnectionGuard(
        max_connections=settings.max_connections or default_connection_limit(),
        idle_timeout=settings.keepalive_timeout,
        body_timeout=settings.body_timeout,
        min_body_rate=settings.min_body_rate,
    )
    quiet_accept_errors(loop)
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, on_signal, signum)
    sweeper = asyncio.create_task(guard.run(), name="primaa-connection-guard")
    try:
        await runner.setup()
        try:
            await GuardedSite(runner, sock, guard).start()
            host, port = sock.getsockname()[:2]
            # What start-up built (modules, plugins, the app) lives as long as the process:
            # out of the collector's sight, a full collection no longer walks it. One took
            # 280-460 ms with the event loop stopped, once per ~2,000 trivial jobs; 9 ms
            # after this (gc callbacks, bench.pipeline's burst).
            gc.freeze()
            log.info("listening", host=host, port=port)
            await stop.wait()
            await _unless(hurry, drain(app))
        finally:
            await runner.cleanup()
    finally:
        sweeper.cancel()
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)
    log.info("service_stopped")


async def drain(app: web.Application) -> None:
    """Let running jobs finish within the grace, then send the callbacks that are due."""
    settings = app[SETTINGS]
    await app[DISPATCHER].drain(settings.shutdown_grace_seconds)
    await flush_callbacks(app[STORE], app[OUTBOX], within=settings.webhook_shutdown_grace_seconds)


async def flush_callbacks(store: DeliveryStore, outbox: Outbox, *, within: float) -> None:
    """Wait (at most ``within`` s) until every delivery due now has had one more attempt.

    The outbox loop does the sending, so a delivery is never sent twice at once;
    an attempt that fails is rescheduled later than now and so counts as done.
    """
    due_at = time.time()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while await store.due_deliveries(now=due_at, limit=1):
        if loop.time() >= deadline:
            log.warning("callbacks_not_flushed", within=within)
            return
        outbox.wake()
        await asyncio.sleep(0.05)


async def _unless(event: asyncio.Event, work: Coroutine[Any, Any, None]) -> None:
    """Run ``work`` to its end, or cancel it when ``event`` is set first."""
    task = asyncio.ensure_future(work)
    interrupted = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({task, interrupted}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        interrupted.cancel()
    if not task.done():
        log.warning("drain_cut_short")
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
