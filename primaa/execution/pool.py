"""Runs CPU-bound algorithm calls in a pool of worker processes.

Workers are spawned (not forked: the service has threads and an event loop),
load the plugins once in their initializer, and get only a small
:class:`WorkRequest` — the image travels as a spooled file path. Progress comes
back over one queue read by one thread and handed to the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import multiprocessing
import os
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from primaa.execution.worker import (
    WorkerEvent,
    WorkRequest,
    cancel_flag,
    initialize,
    run_job,
)
from primaa.jobs.ports import WorkerLost
from primaa.plugins.algorithm import AlgorithmResult

if TYPE_CHECKING:
    from primaa.execution.worker import EventQueue

log = structlog.get_logger(__name__)

ProgressSink = Callable[[str, float], None]


class ProcessPoolRunner:
    def __init__(
        self,
        *,
        workers: int,
        cancel_dir: Path,
        max_pixels: int,
        disabled_plugins: tuple[str, ...] = (),
        plugin_modules: tuple[str, ...] = (),
        log_format: str = "json",
        log_level: str = "info",
    ) -> None:
        self.workers = workers
        self._max_pixels = max_pixels
        self._cancel_dir = cancel_dir
        self._initargs = (str(cancel_dir), disabled_plugins, plugin_modules, log_format, log_level)
        self._context = multiprocessing.get_context("spawn")
        self._events: EventQueue = self._context.Queue()
        self._pool: ProcessPoolExecutor | None = None
        self._reader: threading.Thread | None = None
        self._progress_sinks: list[ProgressSink] = []

    def on_progress(self, sink: ProgressSink) -> None:
        self._progress_sinks.append(sink)

    def start(self) -> None:
        """Start the pool; no worker runs yet, so every cancellation flag left is stale."""
        self._cancel_dir.mkdir(parents=True, exist_ok=True)
        for stale in self._cancel_dir.iterdir():
            stale.unlink(missing_ok=True)
        self._pool = self._new_pool()
        self._warm(self._pool)
        loop = asyncio.get_running_loop()
        self._reader = threading.Thread(
            target=self._read_events, args=(loop,), name="primaa-worker-events", daemon=True
        )
        self._reader.start()

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=self._context,
            initializer=functools.partial(initialize, self._events, *self._initargs),
        )

    def _warm(self, pool: ProcessPoolExecutor) -> None:
        """Start every worker now (each loads the plugins once), not on the first jobs."""
        for _ in range(self.workers):
            pool.submit(os.getpid)

    def _read_events(self, loop: asyncio.AbstractEventLoop) -> None:
        while (event := self._events.get()) is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._dispatch, event)

    def _dispatch(self, event: WorkerEvent) -> None:
        kind, job_id, value = event
        if kind == "progress":
            for sink in self._progress_sinks:
                sink(job_id, value)

    async def run(
        self, job_id: str, algorithm: str, image_path: Path, parameters: Mapping[str, Any]
    ) -> AlgorithmResult:
        pool = self._pool
        if pool is None:
            raise RuntimeError("the process pool is not started")
        request = WorkRequest(
            job_id=job_id,
            algorithm=algorithm,
            image_path=str(image_path),
            parameters=dict(parameters),
            max_pixels=self._max_pixels,
            request_id=structlog.contextvars.get_contextvars().get("request_id"),
        )
        try:
            return await asyncio.wrap_future(pool.submit(run_job, request))
        except BrokenProcessPool:
            self._replace_broken(pool)
            raise WorkerLost("the worker process died while running the job") from None

    def _replace_broken(self, broken: ProcessPoolExecutor) -> None:
        if self._pool is broken:
            log.warning("worker_pool_rebuilt")
            self._pool = self._new_pool()
            self._warm(self._pool)
            broken.shutdown(wait=False, cancel_futures=True)

    def cancel(self, job_id: str) -> None:
        """Ask the worker running ``job_id`` to stop at its next progress report."""
        cancel_flag(self._cancel_dir, job_id).touch()

    def forget(self, job_id: str) -> None:
        cancel_flag(self._cancel_dir, job_id).unlink(missing_ok=True)

    async def close(self) -> None:
        """Stop the workers without blocking the event loop."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
            await asyncio.to_thread(pool.shutdown, wait=True)
        self._events.put(None)
        if self._reader is not None:
            await asyncio.to_thread(self._reader.join, 5)
