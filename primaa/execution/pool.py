"""Runs CPU-bound algorithm calls in a pool of worker processes.

Workers are spawned (not forked: the service has threads and an event loop),
load the plugins once in their initializer, and get only a small
:class:`WorkRequest` — the image travels as a spooled file path. Progress comes
back over one pipe read by one thread and handed to the event loop.

When a worker dies, ``ProcessPoolExecutor`` breaks every future in flight and
then terminates the other workers with SIGTERM (in that order, on 3.11: at the
moment the futures break, no exit code is known yet). The pool is replaced at
once; a post-mortem waits for the old workers to exit and reads their exit
codes. A worker that did not end by SIGTERM, and that this runner did not kill
on purpose, died by itself; the task it announced ("started", task_id, pid) is the
culprit and fails, and the others were only interrupted and run again. When no
worker can be blamed (say an operator sent SIGTERM), every job gets the plain
:class:`WorkerLost` and is retried as a counted attempt.

Workers die with the service, even when it is killed with SIGKILL: see
:mod:`primaa.execution.lifeline`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import multiprocessing
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, MutableMapping
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.context import Process
from pathlib import Path

import structlog

from primaa.execution.lifeline import Lifeline, death_signal_is_safe
from primaa.execution.worker import (
    WorkerEvent,
    WorkRequest,
    cancel_flag,
    initialize,
    run_job,
)
from primaa.imaging.decode import ImageDecodeError
from primaa.imaging.slides import SlideError, Tile
from primaa.jobs.ports import (
    ImageUnavailable,
    JobInterrupted,
    OutOfMemory,
    ProgressSink,
    Task,
    TaskError,
    WorkerCrashed,
    WorkerLost,
)
from primaa.plugins.algorithm import AlgorithmResult, JobCancelled

log = structlog.get_logger(__name__)

#: How long a post-mortem waits for the workers of a broken pool to exit.
EXIT_WAIT_SECONDS = 5.0


class AlgorithmExited(TaskError):
    """The algorithm raised ``SystemExit`` or ``KeyboardInterrupt`` in its worker.

    The worker survives it (the executor sends it back as the outcome), but re-raised on
    the event loop it would stop the whole service: it fails the job instead.
    """

    def __init__(self, exc: BaseException) -> None:
        super().__init__(f"the algorithm tried to end its process ({type(exc).__name__}: {exc})")


@dataclasses.dataclass(eq=False)
class _Generation:
    """One ``ProcessPoolExecutor`` and what its workers announced."""

    pool: ProcessPoolExecutor
    #: The executor's own ``{pid: Process}`` dict. ``_processes`` is private, but it has
    #: been there, with this meaning, since 3.2; the executor only ever fills it and the
    #: dict object outlives ``shutdown()``. Workers are spawned by the executor, so there
    #: is no other handle on their exit codes (reaping them ourselves would race it).
    processes: MutableMapping[int, Process]
    #: task_id -> pid of the worker that announced it; pid -> the task it announced last.
    started: dict[str, int] = dataclasses.field(default_factory=dict)
    running: dict[int, str] = dataclasses.field(default_factory=dict)
    #: pid -> task_id of the workers killed on purpose (a timeout or a cancel).
    killed: dict[int, str] = dataclasses.field(default_factory=dict)
    post_mortem: asyncio.Task[_Verdict] | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class _Verdict:
    """Why a pool broke: the workers that died by themselves (pid -> exit code)."""

    started: Mapping[str, int]
    died: Mapping[int, int]
    killed: Mapping[int, str]

    def error_for(self, task_id: str) -> Exception:
        pid = self.started.get(task_id)
        if pid is not None and self.killed.get(pid) == task_id:
            return JobCancelled(task_id)
        if pid is not None and pid in self.died:
            return WorkerCrashed(
                f"the worker process died ({describe_exit(self.died[pid])}) while running this job"
            )
        if self.died or self.killed:
            return JobInterrupted("another job's worker process died; this job runs again")
        return WorkerLost("the worker process died while running the job")


def describe_exit(code: int) -> str:
    """``killed by SIGSEGV`` or ``exit code 3``, from a ``Process.exitcode``."""
    if code >= 0:
        return f"exit code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    if -code == signal.SIGKILL:
        return f"killed by {name}, e.g. by the out-of-memory killer"
    return f"killed by {name}"


def _join_all(processes: Iterable[Process], timeout: float) -> None:
    """Wait, up to ``timeout`` in all, for the processes to exit (the executor ends them)."""
    deadline = time.monotonic() + timeout
    for process in processes:
        process.join(max(deadline - time.monotonic(), 0.0))


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
        kill_grace: float = 1.0,
        memory_limit_mb: int = 0,
    ) -> None:
        self.workers = workers
        self._max_pixels = max_pixels
        self._cancel_dir = cancel_dir
        self._kill_grace = kill_grace
        self._memory_limit_mb = memory_limit_mb
        self._context = multiprocessing.get_context("spawn")
        self._receiver, self._sender = self._context.Pipe(duplex=False)
        self._lifeline = Lifeline(self._context)
        self._initargs = (
            self._sender,
            str(cancel_dir),
            disabled_plugins,
            plugin_modules,
            log_format,
            log_level,
            memory_limit_mb,
        )
        self._current: _Generation | None = None
        #: The current pool last; broken ones stay until their post-mortem is done.
        self._generations: list[_Generation] = []
        self._inflight: dict[str, tuple[Future[AlgorithmResult], _Generation]] = {}
        self._barriers: dict[str, asyncio.Future[None]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reader: threading.Thread | None = None
        self._progress_sinks: list[ProgressSink] = []

    def on_progress(self, sink: ProgressSink) -> None:
        self._progress_sinks.append(sink)

    def start(self) -> None:
        """Start the pool; no worker runs yet, so every cancellation flag left is stale."""
        self._cancel_dir.mkdir(parents=True, exist_ok=True)
        for stale in self._cancel_dir.iterdir():
            stale.unlink(missing_ok=True)
        self._loop = asyncio.get_running_loop()
        self._current = self._new_generation()
        self._reader = threading.Thread(
            target=self._read_events, args=(self._loop,), name="primaa-worker-events", daemon=True
        )
        self._reader.start()

    def _new_generation(self) -> _Generation:
        """A new pool with every worker started now (each loads the plugins once).

        The workers are forked by the submits below (or a later one), all on the event
        loop's thread: whether they may get a parent-death signal depends on that thread.
        """
        initializer = functools.partial(
            initialize,
            *self._initargs,
            lifeline=self._lifeline.end,
            death_signal=death_signal_is_safe(),
        )
        pool = ProcessPoolExecutor(
            max_workers=self.workers, mp_context=self._context, initializer=initializer
        )
        generation = _Generation(pool=pool, processes=pool._processes)
        self._generations.append(generation)
        # A Ctrl-C reaches the whole process group. Blocked while the workers are started
        # (children inherit the mask), one still importing cannot die of it; the
        # initializer ignores SIGINT, then unblocks it.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            for _ in range(self.workers):
                pool.submit(os.getpid)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        return generation

    def _read_events(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            try:
                event: WorkerEvent | None = self._receiver.recv()
            except (EOFError, OSError):
                return
            if event is None:
                return
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._dispatch, event)

    def _dispatch(self, event: WorkerEvent) -> None:
        kind, task_id, value = event
        if kind == "progress":
            for sink in self._progress_sinks:
                sink(task_id, value)
        elif kind == "started":
            pid = int(value)
            for generation in reversed(self._generations):
                if pid in generation.processes:
                    generation.started[task_id] = pid
                    generation.running[pid] = task_id
                    break
        elif kind == "sync":
            barrier = self._barriers.pop(task_id, None)
            if barrier is not None and not barrier.done():
                barrier.set_result(None)

    async def run(self, task: Task) -> AlgorithmResult:
        task_id = task.task_id
        if task.region is not None and not isinstance(task.region, Tile):
            raise TypeError(f"the process pool reads slide tiles, not {type(task.region)}")
        request = WorkRequest(
            job_id=task.job_id,
            task_id=task_id,
            region=task.region,
            algorithm=task.algorithm,
            image_path=str(task.image_path),
            parameters=dict(task.parameters),
            max_pixels=self._max_pixels,
            request_id=structlog.contextvars.get_contextvars().get("request_id"),
        )
        generation, future = self._submit(request)
        try:
            return await asyncio.wrap_future(future)
        except BrokenProcessPool:
            verdict = await asyncio.shield(self._broken(generation))
            raise verdict.error_for(task_id) from None
        except MemoryError:
            raise OutOfMemory(self._memory_limit_mb) from None
        except (SystemExit, KeyboardInterrupt) as exc:
            if not future.done() or future.cancelled() or future.exception() is not exc:
                raise
            raise AlgorithmExited(exc) from None
        except (ImageDecodeError, SlideError) as exc:
            raise ImageUnavailable(str(exc)) from None

    def _submit(self, request: WorkRequest) -> tuple[_Generation, Future[AlgorithmResult]]:
        """Submit to the current pool; one that broke while idle is replaced and tried once more."""
        for _ in range(2):
            generation = self._current
            if generation is None:
                raise RuntimeError("the process pool is not started")
            try:
                future = generation.pool.submit(run_job, request)
            except BrokenProcessPool:
                self._broken(generation)
                continue
            self._inflight[request.key] = (future, generation)
            future.add_done_callback(functools.partial(self._settled, request.key))
            return generation, future
        raise WorkerLost("the worker pool broke twice while starting the job")

    def _settled(self, task_id: str, future: Future[AlgorithmResult]) -> None:
        """Done callback, on the executor's thread: forget the job on the loop."""
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._forget_inflight, task_id, future)

    def _forget_inflight(self, task_id: str, future: Future[AlgorithmResult]) -> None:
        if self._inflight.get(task_id, (None,))[0] is future:
            del self._inflight[task_id]

    def _broken(self, generation: _Generation) -> asyncio.Task[_Verdict]:
        """Replace the pool if it is the current one, and examine it once."""
        if generation is self._current:
            log.warning("worker_pool_rebuilt")
            self._current = self._new_generation()
            generation.pool.shutdown(wait=False)
        if generation.post_mortem is None:
            generation.post_mortem = asyncio.create_task(
                self._examine(generation), name="primaa-worker-post-mortem"
            )
        return generation.post_mortem

    async def _examine(self, generation: _Generation) -> _Verdict:
        """Wait for the old workers to exit and for their last events, then read exit codes."""
        try:
            processes = dict(generation.processes)
            await asyncio.to_thread(_join_all, processes.values(), EXIT_WAIT_SECONDS)
            await self._drain_events()
            died = {
                pid: code
                for pid, process in processes.items()
                if (code := process.exitcode) is not None
                and code != -signal.SIGTERM
                and pid not in generation.killed
            }
            for pid, code in died.items():
                log.warning(
                    "worker_died",
                    pid=pid,
                    exit=describe_exit(code),
                    culprit=generation.running.get(pid),
                )
            return _Verdict(
                started=dict(generation.started), died=died, killed=dict(generation.killed)
            )
        finally:
            self._generations.remove(generation)

    async def _drain_events(self) -> None:
        """Return once every event sent before now (by the dead workers) has been dispatched."""
        token = uuid.uuid4().hex
        barrier = asyncio.get_running_loop().create_future()
        self._barriers[token] = barrier
        self._sender.send(("sync", token, 0.0))
        try:
            await asyncio.wait_for(barrier, EXIT_WAIT_SECONDS)
        except TimeoutError:
            log.warning("worker_events_not_drained")
        finally:
            self._barriers.pop(token, None)

    def cancel(self, task_id: str) -> None:
        """Ask the job to stop at its next progress report; kill its worker after the grace."""
        cancel_flag(self._cancel_dir, task_id).touch()
        if self._loop is not None:
            self._loop.call_later(self._kill_grace, self._kill, task_id)

    def _kill(self, task_id: str) -> None:
        """SIGKILL the worker still running ``task_id``; its neighbours run again elsewhere."""
        entry = self._inflight.get(task_id)
        if entry is None or entry[0].done():
            return
        generation = entry[1]
        pid = generation.started.get(task_id)
        if pid is None or generation.running.get(pid) != task_id:
            return  # not started yet: its cancellation flag stops it at once when it starts
        process = generation.processes.get(pid)
        if process is None or process.exitcode is not None:
            return
        generation.killed[pid] = task_id
        process.kill()
        cancel_flag(self._cancel_dir, task_id).unlink(missing_ok=True)
        log.warning("worker_killed", task_id=task_id, pid=pid, grace_seconds=self._kill_grace)
        self._broken(generation)

    def forget(self, task_id: str) -> None:
        cancel_flag(self._cancel_dir, task_id).unlink(missing_ok=True)

    async def close(self) -> None:
        """Stop the workers without blocking the event loop."""
        current, self._current = self._current, None
        if current is not None:
            current.pool.shutdown(wait=False, cancel_futures=True)
            await asyncio.to_thread(current.pool.shutdown, wait=True)
        examining = [g.post_mortem for g in self._generations if g.post_mortem is not None]
        await asyncio.gather(*examining, return_exceptions=True)
        self._lifeline.close()
        self._sender.send(None)
        if self._reader is not None:
            await asyncio.to_thread(self._reader.join, 5)
            if self._reader.is_alive():
                return
        self._receiver.close()
        self._sender.close()
