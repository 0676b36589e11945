"""Runs a slide job as many tile tasks across every worker, and merges their results.

:class:`TilingExecutor` wraps any :class:`~primaa.jobs.ports.Executor` (the
local process pool, or Dask) and is one itself. For each job it plans in a
thread (:func:`~primaa.execution.slide_plan.plan_job`): a flat image runs as
one task, as it always did; a slide runs as tile tasks, ``task_id``
``"{job_id}/{n}"``, each reading only its own region in its worker.

- **A window.** At most ``window`` tiles of a job are handed to the inner
  executor at once: enough to keep every worker busy, few enough that the
  tiles of several slide jobs alternate in the inner executor's queue, so the
  jobs share the workers, and a cancel has little to take back.
- **Merged as they arrive.** Each result is merged into level-0 coordinates at
  once (:class:`~primaa.execution.tile_results.TileResults`); the service holds
  the kept objects, never pixels.
- **Progress** is tiles done over tiles total, under the job's task id.
- **Cancel** stops handing out tiles and cancels the ones handed out: those not
  started stop before their algorithm runs, running ones at their next progress
  report or by their worker being killed.
- **Failures** name the tile. A worker crash in a tile fails the job
  (:class:`WorkerCrashed`); a tile interrupted by another job's crash
  (:class:`JobInterrupted`) runs again, on its own.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any, Final

import structlog

from primaa.execution.slide_plan import SlidePlan, plan_job
from primaa.execution.tile_results import Combine, TileResults, whole_to_level0
from primaa.imaging.slides import SlideError, Tile
from primaa.imaging.slides.tiling import DEFAULT_TILE_SIZE
from primaa.jobs.ports import (
    Executor,
    ImageUnavailable,
    JobInterrupted,
    ProgressSink,
    Task,
    TaskError,
    WorkerCrashed,
    WorkerLost,
)
from primaa.plugins.algorithm import (
    DOWNSAMPLE,
    PIXEL_SIZE_UM,
    AlgorithmResult,
    AnyAlgorithm,
    AsyncAlgorithm,
    JobCancelled,
)

__all__ = ["TilingExecutor", "tile_task_id"]

log = structlog.get_logger(__name__)

#: A tile interrupted by other jobs' crashes more often than this fails its job.
MAX_TILE_INTERRUPTIONS: Final = 3


def tile_task_id(job_task_id: str, tile: Tile) -> str:
    return f"{job_task_id}/{tile.index}"


@dataclasses.dataclass(eq=False)
class _SlideRun:
    """One job's tiles in flight: what cancel and progress need to find."""

    task: Task
    total: int = 0
    done: int = 0
    cancelled: bool = False
    #: tile task_id -> the asyncio task awaiting the inner executor.
    inflight: dict[str, asyncio.Task[AlgorithmResult]] = dataclasses.field(default_factory=dict)
    wake: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)


class TilingExecutor:
    """An :class:`Executor` that runs slide jobs as tiles on ``inner``."""

    def __init__(
        self,
        inner: Executor,
        lookup: Callable[[str], AnyAlgorithm | None],
        *,
        workers: int,
        max_pixels: int,
        tile_size: int = DEFAULT_TILE_SIZE,
        window: int | None = None,
    ) -> None:
        self._inner = inner
        self._lookup = lookup
        self._max_pixels = max_pixels
        self._tile_size = tile_size
        self._workers = max(1, workers)
        #: Twice the workers: each has a tile queued behind the one it runs.
        self.window = window or 2 * max(1, workers)
        self._sinks: list[ProgressSink] = []
        self._jobs: dict[str, _SlideRun] = {}
        self._tiles: dict[str, _SlideRun] = {}
        inner.on_progress(self._inner_progress)

    def on_progress(self, sink: ProgressSink) -> None:
        self._sinks.append(sink)

    def _report(self, task_id: str, fraction: float) -> None:
        for sink in self._sinks:
            sink(task_id, fraction)

    def _inner_progress(self, task_id: str, fraction: float) -> None:
        run = self._tiles.get(task_id)
        if run is None:
            if task_id.rpartition("/")[0] not in self._jobs:
                self._report(task_id, fraction)  # not a tile, nor one that came in late
        elif run.total == 1:
            self._report(run.task.task_id, fraction)

    async def plan(self, task: Task) -> SlidePlan | None:
        """The job's plan, made in a thread; ``None``: one task on the inner executor."""
        algorithm = self._lookup(task.algorithm)
        if task.region is not None or algorithm is None or isinstance(algorithm, AsyncAlgorithm):
            return None
        try:
            return await asyncio.to_thread(
                plan_job,
                task.image_path,
                algorithm,
                max_pixels=self._max_pixels,
                tile_size=self._tile_size,
                workers=self._workers,
            )
        except SlideError as exc:
            raise ImageUnavailable(str(exc)) from None

    async def run(self, task: Task) -> AlgorithmResult:
        if task.region is not None:
            return await self._inner.run(task)
        run = self._jobs[task.task_id] = _SlideRun(task)
        try:
            plan = await self.plan(task)
            if run.cancelled:
                self._inner.forget(task.task_id)
                raise JobCancelled(task.job_id)
            if plan is None:
                return await self._inner.run(task)
            return await self._run_plan(run, plan)
        finally:
            del self._jobs[task.task_id]

    async def run_planned(self, task: Task, plan: SlidePlan) -> AlgorithmResult:
        """Run a job whose plan is already made (``primaa run`` shows it before it starts)."""
        run = self._jobs[task.task_id] = _SlideRun(task)
        try:
            return await self._run_plan(run, plan)
        finally:
            del self._jobs[task.task_id]

    async def _run_plan(self, run: _SlideRun, plan: SlidePlan) -> AlgorithmResult:
        task = run.task
        run.total = len(plan.tiles)
        parameters = dict(task.parameters)
        if plan.informed:
            parameters = {
                PIXEL_SIZE_UM: plan.pixel_size_um,
                DOWNSAMPLE: plan.downsample,
                **parameters,
            }
        log.info(
            "slide_job_planned",
            tiles=run.total,
            downsample=plan.downsample,
            pixel_size_um=plan.pixel_size_um,
            width=plan.dimensions[0],
            height=plan.dimensions[1],
        )
        merged = TileResults(plan.dimensions, self._combiner(task.algorithm, parameters))
        pending = collections.deque(plan.tiles)
        tiles: dict[str, Tile] = {}
        interrupted: collections.Counter[int] = collections.Counter()
        try:
            while pending or run.inflight:
                while pending and len(run.inflight) < self.window and not run.cancelled:
                    tile = pending.popleft()
                    tile_id = tile_task_id(task.task_id, tile)
                    tiles[tile_id] = tile
                    self._start(
                        run,
                        dataclasses.replace(
                            task, parameters=parameters, region=tile, task_id=tile_id
                        ),
                    )
                if not run.inflight:
                    break
                run.wake.clear()
                waiter = asyncio.ensure_future(run.wake.wait())
                try:
                    await asyncio.wait(
                        [*run.inflight.values(), waiter], return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    waiter.cancel()
                for tile_id, future in list(run.inflight.items()):
                    if not future.done():
                        continue
                    self._settle(run, tile_id)
                    tile = tiles.pop(tile_id)
                    try:
                        result = future.result()
                    except JobInterrupted:
                        if run.cancelled:
                            continue
                        interrupted[tile.index] += 1
                        if interrupted[tile.index] > MAX_TILE_INTERRUPTIONS:
                            raise
                        pending.appendleft(tile)
                        continue
                    except JobCancelled:
                        if run.cancelled:
                            continue
                        raise
                    except Exception as exc:
                        if run.cancelled:
                            continue
                        if plan.whole:
                            raise  # the image in one piece: its errors are the job's own
                        raise _tile_error(exc, tile, run.total) from exc
                    if run.cancelled:
                        continue
                    if plan.whole:
                        return whole_to_level0(tile, result, plan.dimensions)
                    merged.add(tile, result)
                    run.done += 1
                    self._report(task.task_id, run.done / run.total)
            if run.cancelled:
                raise JobCancelled(task.job_id)
            # A million nuclei take seconds to write out: not on the event loop.
            return await asyncio.to_thread(merged.result)
        finally:
            await self._abandon(run)

    def _combiner(self, name: str, parameters: Mapping[str, Any]) -> Combine | None:
        """The algorithm's ``combine`` with this job's parameters (the default says ``None``)."""
        algorithm = self._lookup(name)
        if algorithm is None:
            return None
        return functools.partial(algorithm.combine, parameters=parameters)

    def _start(self, run: _SlideRun, tile_task: Task) -> None:
        self._inner.forget(tile_task.task_id)
        self._tiles[tile_task.task_id] = run
        run.inflight[tile_task.task_id] = asyncio.ensure_future(self._inner.run(tile_task))

    def _settle(self, run: _SlideRun, tile_id: str) -> None:
        run.inflight.pop(tile_id, None)
        self._tiles.pop(tile_id, None)

    async def _abandon(self, run: _SlideRun) -> None:
        """Stop whatever tiles are still out (a failure, a time limit) and wait for them."""
        if not run.inflight:
            return
        for tile_id, future in run.inflight.items():
            self._inner.cancel(tile_id)
            future.cancel()
        await asyncio.gather(*run.inflight.values(), return_exceptions=True)
        for tile_id in list(run.inflight):
            self._settle(run, tile_id)

    def cancel(self, task_id: str) -> None:
        """Cancel a job: its tiles not handed out never start, the others are cancelled."""
        run = self._jobs.get(task_id)
        if run is None or run.total == 0:
            self._inner.cancel(task_id)
        if run is None:
            return
        run.cancelled = True
        run.wake.set()
        for tile_id in run.inflight:
            self._inner.cancel(tile_id)

    def forget(self, task_id: str) -> None:
        self._inner.forget(task_id)


def _tile_error(exc: Exception, tile: Tile, total: int) -> Exception:
    """The tile's failure as the job's, naming the tile; worker deaths keep their kind."""
    x, y, width, height = tile.level0_region
    where = (
        f"tile {tile.index + 1} of {total} (level-0 x={x:.0f}, y={y:.0f}, "
        f"{width:.0f} x {height:.0f} px)"
    )
    if isinstance(exc, WorkerCrashed | WorkerLost | ImageUnavailable):
        return type(exc)(f"{where}: {exc}")
    if isinstance(exc, TaskError):
        return TaskError(f"{where}: {exc}")
    return TaskError(f"{where}: the algorithm failed: {type(exc).__name__}: {exc}")
