"""``create_app(settings)``: wires the service together. Nothing global; every resource
(store, process pool, HTTP client, background loops) is opened and closed in
``cleanup_ctx``, and background tasks are cancelled and awaited on exit.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import TYPE_CHECKING, Any

import aiohttp
import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware

from primaa import __version__
from primaa.api.auth import api_key_auth
from primaa.api.middlewares import request_context
from primaa.api.openapi import build_openapi
from primaa.api.routes import add_routes
from primaa.appkeys import (
    CLIENT_SESSION,
    DEEP_ZOOM,
    DISPATCHER,
    EXECUTOR_STATE,
    MANAGER,
    METRICS,
    NOTIFICATIONS,
    OPENAPI,
    OUTBOX,
    REGISTRY,
    RESULT_INDEXES,
    SETTINGS,
    STORE,
    URL_GUARD,
)
from primaa.config import Settings
from primaa.execution.on_loop import LoopExecutor
from primaa.execution.pool import ProcessPoolRunner
from primaa.execution.tiling import TilingExecutor
from primaa.imaging.deepzoom import DeepZoomTiles
from primaa.imaging.fetch import ImageFetcher
from primaa.imaging.file_roots import FileRoots
from primaa.imaging.sources import ImageSources
from primaa.imaging.urlguard import UrlGuard, make_connector
from primaa.jobs.core import CorePolicy, build_jobs_core
from primaa.jobs.storage import JobStore
from primaa.metrics import Metrics
from primaa.monitoring import LoopLagMonitor
from primaa.plugins.registry import AlgorithmRegistry, load_registry
from primaa.results.bbox import ResultIndexCache
from primaa.store.factory import notifications_for, open_store_from_url
from primaa.store.notifications import DELIVERIES_CHANNEL, JOBS_CHANNEL
from primaa.webhooks.outbox import Outbox, OutboxPolicy
from primaa.webhooks.retry import RetryPolicy
from primaa.webhooks.sender import WebhookSender
from primaa.webhooks.signing import decode_secret

if TYPE_CHECKING:
    from primaa.execution.dask.executor import DaskExecutor

log = structlog.get_logger(__name__)

#: A delivery's claim outlasts one attempt (``webhook_timeout``) by this much, so a
#: live holder records its attempt before anyone may take the delivery over.
CLAIM_MARGIN_SECONDS = 5.0


def create_app(
    settings: Settings,
    *,
    registry: AlgorithmRegistry | None = None,
    store: JobStore | None = None,
) -> web.Application:
    """Build the application; ``registry`` and ``store`` may be injected (tests, embedding)."""
    middlewares: list[Middleware] = [request_context]
    if settings.api_keys:
        # Without keys there is nothing to check, and no layer on every request.
        middlewares.append(api_key_auth(settings))
    app = web.Application(middlewares=middlewares, client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[REGISTRY] = registry or load_registry(
        disabled=settings.disabled_plugins, modules=settings.plugins
    )
    app[METRICS] = Metrics()
    app[URL_GUARD] = UrlGuard(settings.allow_private_urls, settings.allowed_networks)
    app[STORE] = store or open_store_from_url(settings.resolved_database_url)
    add_routes(app)
    app[OPENAPI] = build_openapi(app, app[REGISTRY], __version__)
    app.cleanup_ctx.extend([_store_ctx, _http_ctx, _viewer_ctx, _jobs_ctx])
    return app


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings.spool_dir.mkdir(parents=True, exist_ok=True)
    await app[STORE].open()
    yield
    await app[STORE].close()


async def _http_ctx(app: web.Application) -> AsyncIterator[None]:
    """One client session for image fetches and callbacks, behind the URL guard."""
    guard = app[URL_GUARD]
    connector = make_connector(guard, limit=100, limit_per_host=16)
    async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:
        app[CLIENT_SESSION] = session
        yield


async def _viewer_ctx(app: web.Application) -> AsyncIterator[None]:
    """The viewer's Deep Zoom tiles: their render threads and caches."""
    tiles = DeepZoomTiles(tile_cache=app[SETTINGS].viewer_tile_cache)
    app[DEEP_ZOOM] = tiles
    app[RESULT_INDEXES] = ResultIndexCache()
    try:
        yield
    finally:
        tiles.close()


async def _jobs_ctx(app: web.Application) -> AsyncIterator[None]:
    """The process pool, the job manager and the outbox, with their background loops."""
    settings = app[SETTINGS]
    session = app[CLIENT_SESSION]
    store = app[STORE]
    guard = app[URL_GUARD]
    runner, cpu_slots = await _start_cpu_executor(settings)
    sender = WebhookSender(
        session,
        timeout=settings.webhook_timeout,
        signing_key=decode_secret(settings.webhook_secret) if settings.webhook_secret else None,
        check_url=guard.check_url,
    )
    outbox = Outbox(
        store,
        sender,
        RetryPolicy(schedule=settings.webhook_retry_schedule),
        OutboxPolicy(
            concurrency=settings.webhook_concurrency,
            per_host=settings.webhook_concurrency_per_host,
            claim_seconds=settings.webhook_timeout + CLAIM_MARGIN_SECONDS,
            poll_interval=settings.poll_interval,
            shutdown_grace=settings.webhook_shutdown_grace_seconds,
        ),
    )
    outbox.on_attempt(
        lambda _d, _a, status: app[METRICS].webhook_attempts.labels(str(status)).inc()
    )
    fetcher = ImageFetcher(
        session,
        guard,
        spool_dir=settings.spool_dir,
        # A slide is known as one only once it is here: the larger limit streams it to disk,
        # and ImageSources.describe then holds a flat image to the flat limit.
        max_bytes=max(settings.max_slide_bytes, settings.max_image_bytes),
        connect_timeout=settings.fetch_connect_timeout,
        read_timeout=settings.fetch_read_timeout,
        total_timeout=settings.fetch_total_timeout,
    )
    images = ImageSources(
        fetcher,
        guard,
        FileRoots(settings.file_roots),
        max_flat_bytes=settings.max_image_bytes,
        max_flat_pixels=settings.max_image_pixels,
    )
    core = build_jobs_core(
        store=store,
        registry=app[REGISTRY],
        # Slide jobs run as tiles across every worker; flat images as one task, as before.
        cpu_executor=TilingExecutor(
            runner,
            app[REGISTRY].get,
            workers=cpu_slots,
            max_pixels=settings.max_image_pixels,
            tile_size=settings.slide_tile_size,
        ),
        io_executor=LoopExecutor(app[REGISTRY], max_pixels=settings.max_image_pixels),
        images=images,
        notifier=outbox,
        metrics=app[METRICS],
        policy=CorePolicy(
            cpu_slots=cpu_slots,
            io_slots=settings.io_concurrency,
            lease_seconds=settings.lease_seconds,
            max_attempts=settings.max_attempts,
            job_timeout=settings.job_timeout,
            max_job_timeout=settings.max_job_timeout,
            max_unfinished=settings.max_unfinished_jobs,
            spool_dir=settings.spool_dir,
            image_retention=settings.image_retention_seconds,
            results_dir=settings.results_dir,
            result_inline_max_bytes=settings.result_inline_max_bytes,
            callback_max_result_bytes=settings.callback_max_result_bytes,
            public_url=settings.public_url,
            poll_interval=settings.poll_interval,
        ),
        check_url=guard.check_url,
    )
    app[MANAGER] = core.manager
    app[DISPATCHER] = dispatcher = core.dispatcher
    app[OUTBOX] = outbox
    # A broken local pool is replaced at once: only a Dask cluster can be away.
    app[EXECUTOR_STATE] = (lambda: "ok") if isinstance(runner, ProcessPoolRunner) else runner.state
    await dispatcher.recover()
    if store.exclusive:
        await outbox.recover()
    notifications = notifications_for(store)
    if notifications is not None:
        notifications.on(JOBS_CHANNEL, dispatcher.wake)
        notifications.on(DELIVERIES_CHANNEL, outbox.wake)
        await notifications.start()
        app[NOTIFICATIONS] = notifications
    store_loops = [
        _supervised("dispatcher", dispatcher.run),
        _supervised("housekeeping", dispatcher.housekeeping),
        _supervised("outbox", outbox.run),
    ]
    monitor = _supervised(
        "loop-lag",
        LoopLagMonitor(
            app[METRICS].loop_lag, warning_seconds=settings.loop_lag_warning_ms / 1000
        ).run,
    )
    log.info(
        "service_started",
        executor=settings.executor,
        cpu_slots=cpu_slots,
        algorithms=app[REGISTRY].names(),
    )
    try:
        yield
    finally:
        # Loops that write to the store stop at their next step rather than being
        # cancelled mid-write (a database thread finishing after the event loop
        # closed is an error); whatever has not stopped in time is cancelled.
        if notifications is not None:
            await notifications.close()
        await dispatcher.close()
        outbox.stop()
        # The outbox gives its deliveries in flight the shutdown grace, then cuts them off.
        _, late = await asyncio.wait(
            store_loops, timeout=settings.webhook_shutdown_grace_seconds + 2.0
        )
        for task in (*late, monitor):
            task.cancel()
        await asyncio.gather(*store_loops, monitor, return_exceptions=True)
        await runner.close()


async def _start_cpu_executor(settings: Settings) -> tuple[ProcessPoolRunner | DaskExecutor, int]:
    """The executor of CPU-bound tasks and how many it runs at once: worker processes here,
    or (``executor = "dask"``, no local worker process) the cluster's worker threads."""
    log_format = "json" if settings.log_format == "auto" else settings.log_format
    if settings.executor == "dask":
        # Imported only now: distributed is an extra.
        from primaa.execution.dask.executor import DaskExecutor

        cluster = DaskExecutor(
            scheduler=settings.dask_scheduler,
            max_pixels=settings.max_image_pixels,
            disabled_plugins=settings.disabled_plugins,
            plugin_modules=settings.plugins,
            log_format=log_format,
            log_level=settings.log_level,
            kill_grace=settings.kill_grace_seconds,
        )
        await cluster.start()
        if settings.worker_memory_limit_mb:
            log.warning(
                "worker_memory_limit_ignored",
                reason="on Dask, the workers' own --memory-limit applies",
            )
        if settings.workers:
            return cluster, settings.workers
        threads = await cluster.threads()
        if not threads:
            log.warning("dask_cluster_empty", cpu_slots=1, hint="set workers (PRIMAA_WORKERS)")
        return cluster, max(threads, 1)
    runner = ProcessPoolRunner(
        workers=settings.worker_count,
        cancel_dir=settings.spool_dir / "cancel",
        max_pixels=settings.max_image_pixels,
        disabled_plugins=settings.disabled_plugins,
        plugin_modules=settings.plugins,
        log_format=log_format,
        log_level=settings.log_level,
        kill_grace=settings.kill_grace_seconds,
        memory_limit_mb=settings.worker_memory_limit_mb,
    )
    runner.start()
    return runner, runner.workers


def _supervised(name: str, loop: Callable[[], Coroutine[Any, Any, None]]) -> asyncio.Task[None]:
    """Run a background loop; if it crashes, log it and start it again after a pause."""

    async def guard() -> None:
        while True:
            try:
                await loop()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("background_loop_crashed", loop=name)
                await asyncio.sleep(1.0)

    return asyncio.create_task(guard(), name=f"primaa-{name}")
