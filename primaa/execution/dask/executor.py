"""``DaskExecutor``: the executor port on a Dask cluster (``executor = "dask"``).

Each task is one Dask task, submitted by an asynchronous ``distributed.Client``
under a key of its own (a re-run of the same task never meets an old run's
cancellation). Only the small :class:`WorkRequest` travels: the worker reads the
slide, or the spooled flat image, from the same path on shared storage.

- Progress and the "started"/"ended" notes come back as worker events on a topic
  of this client's own (``Worker.log_event`` → ``Client.subscribe_topic``).
- Cancel: the future is cancelled (a queued task never runs) and every worker is
  told the run key, which the running task sees at its next progress report; a
  task still running after ``kill_grace`` has its worker restarted by its nanny.
  Time limits are cancels (the job runner calls :meth:`cancel`).
- A worker that dies mid-task: the scheduler runs the task again elsewhere; one
  that killed ``allowed-failures + 1`` workers ends as ``KilledWorker``, here
  :class:`WorkerCrashed`.
- The scheduler away (:mod:`.connection`): tasks wait for it, and the ones it
  dropped are submitted again once it is back.
- Fair sharing: a job's n-th task gets priority ``-n``, so the tiles of the slide
  jobs interleave and a one-task job goes before the later tiles of earlier jobs;
  equal priorities run in submission order (Dask's own FIFO, across replicas
  too). Dask orders the tasks it queues on the scheduler, which it does once more
  than twice the cluster's threads are waiting.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import uuid
from pathlib import Path
from typing import Any

import structlog
from distributed import CancelledError, Client, Future
from distributed.scheduler import KilledWorker

from primaa.execution.dask.connection import DaskUnavailable, SchedulerConnection
from primaa.execution.dask.on_worker import (
    AlgorithmEnded,
    PrimaaWorkerPlugin,
    mark_cancelled,
    run_task,
)
from primaa.execution.worker import WorkRequest
from primaa.imaging.decode import ImageDecodeError
from primaa.imaging.slides import SlideError, Tile
from primaa.jobs.ports import (
    ImageUnavailable,
    OutOfMemory,
    ProgressSink,
    Task,
    TaskError,
    WorkerCrashed,
    WorkerLost,
)
from primaa.plugins.algorithm import AlgorithmResult, JobCancelled

log = structlog.get_logger(__name__)

__all__ = ["AlgorithmExited", "DaskExecutor", "DaskUnavailable"]

#: Task ids cancelled before their run was submitted, remembered until ``forget``.
MAX_EARLY_CANCELS = 10_000


class AlgorithmExited(TaskError):
    """The algorithm tried to end its Dask worker's process (``sys.exit``)."""


@dataclasses.dataclass(eq=False, slots=True)
class _Run:
    """A task in flight: its current submission's Dask key and future, where it runs."""

    task_id: str
    key: str = ""
    future: Future[AlgorithmResult] | None = None
    cancelled: bool = False
    worker: str | None = None
    ended: bool = False
    #: Set by a cancel: wakes the run while it waits for the scheduler.
    stopped: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)


class DaskExecutor:
    def __init__(
        self,
        *,
        scheduler: str,
        max_pixels: int,
        disabled_plugins: tuple[str, ...] = (),
        plugin_modules: tuple[str, ...] = (),
        log_format: str = "json",
        log_level: str = "info",
        kill_grace: float = 1.0,
        connect_timeout: float = 10.0,
    ) -> None:
        self.scheduler = scheduler
        self._max_pixels = max_pixels
        self.kill_grace = kill_grace
        self._cwd = Path.cwd()
        plugin = PrimaaWorkerPlugin(
            disabled_plugins=disabled_plugins,
            plugin_modules=plugin_modules,
            log_format=log_format,
            log_level=log_level,
        )
        self._connection = SchedulerConnection(
            scheduler, plugin=plugin, on_event=self._on_event, timeout=connect_timeout
        )
        self._sinks: list[ProgressSink] = []
        #: task_id -> its run in flight; Dask key -> the same run.
        self._runs: dict[str, _Run] = {}
        self._by_key: dict[str, _Run] = {}
        #: job_id -> [tasks submitted, tasks in flight]: the priority of its next task.
        self._jobs: dict[str, list[int]] = {}
        self._early: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._background: set[asyncio.Task[None]] = set()

    def on_progress(self, sink: ProgressSink) -> None:
        self._sinks.append(sink)

    async def start(self) -> None:
        """Connect to the scheduler and set primaa's plugin up on every worker."""
        await self._connection.open()

    def state(self) -> str:
        """``ok``, or that the scheduler cannot be reached (tasks wait for it meanwhile)."""
        if self._connection.usable() is not None:
            return "ok"
        return f"down: the Dask scheduler at {self.scheduler} cannot be reached"

    @property
    def topic(self) -> str:
        """The worker events' topic: ``["progress", task_id, fraction]``, and
        ``["started" | "ended", Dask key, worker address]``."""
        return self._connection.topic

    async def threads(self) -> int:
        """The threads of the workers connected now (how many tasks run at once)."""
        nthreads: dict[str, int] = await self._connection.client.nthreads()
        return sum(nthreads.values())

    async def _ready_unless_stopped(self, run: _Run) -> Client:
        """A usable client, unless the run is cancelled first (a cancel takes effect at once
        even while the scheduler is away)."""
        client = self._connection.usable()
        if client is not None and not run.cancelled:
            return client
        connecting = asyncio.ensure_future(self._connection.ready())
        stopped = asyncio.ensure_future(run.stopped.wait())
        try:
            await asyncio.wait({connecting, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            connecting.cancel()
        if run.cancelled:
            raise JobCancelled(run.task_id)
        return connecting.result()

    def _on_event(self, event: tuple[float, Any]) -> None:
        """A worker event on this client's topic (on the event loop)."""
        kind, name, value = event[1]
        if kind == "progress":
            if name in self._runs:
                for sink in self._sinks:
                    sink(name, value)
            return
        run = self._by_key.get(name)
        if run is None or run.key != name:
            return
        if kind == "started":
            run.worker, run.ended = value, False
        elif kind == "ended" and run.worker == value:
            run.ended = True

    async def run(self, task: Task) -> AlgorithmResult:
        if task.region is not None and not isinstance(task.region, Tile):
            raise TypeError(f"the Dask executor reads slide tiles, not {type(task.region)}")
        if task.task_id in self._early:
            del self._early[task.task_id]
            raise JobCancelled(task.job_id)
        request = WorkRequest(
            job_id=task.job_id,
            task_id=task.task_id,
            region=task.region,
            algorithm=task.algorithm,
            # Workers have another working directory: the path must be absolute.
            image_path=str(self._cwd / task.image_path),
            parameters=dict(task.parameters),
            max_pixels=self._max_pixels,
            request_id=structlog.contextvars.get_contextvars().get("request_id"),
        )
        counts = self._jobs.setdefault(task.job_id, [0, 0])
        priority = -counts[0]
        counts[0] += 1
        counts[1] += 1
        run = self._runs[task.task_id] = _Run(task.task_id)
        try:
            while True:
                client = await self._ready_unless_stopped(run)
                self._submit(client, run, request, priority)
                result = await self._outcome(client, run)
                if result is not None:
                    return result
                log.warning("dask_task_resubmitted", task_id=task.task_id, reason="scheduler lost")
        except asyncio.CancelledError:
            # The job runner stopped waiting (a time limit, a shutdown): stop the task too.
            self._stop(run)
            raise
        finally:
            self._finished(task.job_id, run)

    def _submit(self, client: Client, run: _Run, request: WorkRequest, priority: int) -> None:
        """Submit under a new key: a run never meets an earlier run's cancellation."""
        self._by_key.pop(run.key, None)
        run.key = f"primaa-{run.task_id}-{uuid.uuid4().hex}"
        run.worker, run.ended = None, False
        self._by_key[run.key] = run
        run.future = client.submit(
            run_task, request, run.key, self.topic, key=run.key, pure=False, priority=priority
        )

    async def _outcome(self, client: Client, run: _Run) -> AlgorithmResult | None:
        """The task's result; ``None`` when the connection to the scheduler was lost."""
        assert run.future is not None
        try:
            result: AlgorithmResult = await run.future
            return result
        except CancelledError as exc:  # distributed's, not asyncio's
            if run.cancelled:
                raise JobCancelled(run.task_id) from None
            if client.status != "running":
                return None
            raise WorkerLost(f"the Dask scheduler dropped the task: {exc}") from None
        except Exception as exc:
            raise self._error(exc) from None

    def _error(self, exc: Exception) -> Exception:
        """What the job runner should see for an exception the task raised."""
        if isinstance(exc, KilledWorker):
            return WorkerCrashed(
                f"every Dask worker that ran this task died ({exc.allowed_failures + 1} of them:"
                " a crash, or the worker's memory limit); the scheduler gave up on it"
            )
        if isinstance(exc, MemoryError):
            return OutOfMemory(0)
        if isinstance(exc, AlgorithmEnded):
            return AlgorithmExited(str(exc))
        if isinstance(exc, ImageDecodeError | SlideError):
            return ImageUnavailable(str(exc))
        if isinstance(exc, FileNotFoundError):
            return ImageUnavailable(
                f"the Dask worker cannot read the image ({exc}): the spool and the slides must be"
                " on storage shared with the workers, at the same path"
            )
        return exc

    def _finished(self, job_id: str, run: _Run) -> None:
        if self._runs.get(run.task_id) is run:
            del self._runs[run.task_id]
        if not run.cancelled:
            self._by_key.pop(run.key, None)
        counts = self._jobs.get(job_id)
        if counts is not None:
            counts[1] -= 1
            if counts[1] <= 0:
                del self._jobs[job_id]

    def cancel(self, task_id: str) -> None:
        """Stop the task: never started if queued, else at its next progress report, else by
        restarting its worker after ``kill_grace``."""
        run = self._runs.get(task_id)
        if run is None:
            self._early[task_id] = None
            while len(self._early) > MAX_EARLY_CANCELS:
                self._early.popitem(last=False)
            return
        self._stop(run)

    def forget(self, task_id: str) -> None:
        self._early.pop(task_id, None)

    def _stop(self, run: _Run) -> None:
        if run.cancelled:
            return
        run.cancelled = True
        run.stopped.set()
        if run.future is not None:
            self._spawn(self._stop_run(run, run.future))

    async def _stop_run(self, run: _Run, future: Future[AlgorithmResult]) -> None:
        client = future.client
        try:
            await future.cancel(reason="cancelled by primaa")
            await client.run(mark_cancelled, run.key, on_error="ignore")
            await asyncio.sleep(self.kill_grace)
            if run.worker is not None and not run.ended:
                log.warning(
                    "dask_worker_restarted",
                    task_id=run.task_id,
                    worker=run.worker,
                    grace_seconds=self.kill_grace,
                )
                await client.restart_workers([run.worker], raise_for_error=False)
        except Exception as exc:  # the scheduler went away: the run was dropped anyway
            log.warning("dask_cancel_failed", task_id=run.task_id, error=str(exc))
        finally:
            self._by_key.pop(run.key, None)

    def _spawn(self, work: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        """Cancel what this service still has on the cluster, then disconnect."""
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        futures = [run.future for run in self._runs.values() if run.future is not None]
        with contextlib.suppress(Exception):  # a scheduler gone already
            if futures:
                await self._connection.client.cancel(futures, reason="the primaa service stopped")
        await self._connection.close()
