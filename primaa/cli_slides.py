"""``primaa run`` on a slide: its tiles across ``--workers`` processes, with a progress bar.

The same pieces as the service (the process pool under the tiling executor), without
the service: the slide is planned here, its tiles run in worker processes, and the
merged result comes back. On a terminal, stderr shows tiles done over tiles total;
elsewhere nothing is added to the output.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from primaa.config import Settings
from primaa.execution.pool import ProcessPoolRunner
from primaa.execution.slide_plan import SlidePlan, plan_job
from primaa.execution.tiling import TilingExecutor
from primaa.jobs.ports import Task
from primaa.plugins.algorithm import AlgorithmResult, AnyAlgorithm
from primaa.plugins.registry import AlgorithmRegistry

__all__ = ["ProgressBar", "plan_image", "run_slide"]

BAR_WIDTH = 30


def plan_image(settings: Settings, algorithm: AnyAlgorithm, path: Path) -> SlidePlan | None:
    """How ``primaa run`` runs ``algorithm`` on ``path``: ``None`` for one call in-process.

    Raises :class:`primaa.jobs.ports.TaskError` or
    :class:`primaa.imaging.slides.SlideError` with a message for the user.
    """
    return plan_job(
        path,
        algorithm,
        max_pixels=settings.max_image_pixels,
        tile_size=settings.slide_tile_size,
        workers=settings.worker_count,
    )


class ProgressBar:
    """``label: [#####-----] 12/40 tiles`` redrawn on a terminal; silent anywhere else."""

    def __init__(self, label: str, total: int, stream: TextIO = sys.stderr) -> None:
        self._label = label
        self._total = total
        self._stream = stream
        self._shown = -1
        self.active = stream.isatty()

    def update(self, fraction: float) -> None:
        done = min(self._total, round(fraction * self._total))
        if not self.active or done == self._shown:
            return
        self._shown = done
        filled = BAR_WIDTH * done // max(1, self._total)
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        print(f"\r{self._label}: [{bar}] {done}/{self._total} tiles", end="", file=self._stream)

    def close(self) -> None:
        if self.active and self._shown >= 0:
            print(file=self._stream)


def run_slide(
    settings: Settings,
    registry: AlgorithmRegistry,
    algorithm: AnyAlgorithm,
    path: Path,
    parameters: Mapping[str, Any],
    plan: SlidePlan,
) -> AlgorithmResult:
    """Run the planned slide on ``settings.worker_count`` worker processes."""
    bar = ProgressBar(path.name, len(plan.tiles))
    try:
        task = Task("run", algorithm.name, path.resolve(), parameters)
        return asyncio.run(_run(settings, registry, task, plan, bar))
    finally:
        bar.close()


async def _run(
    settings: Settings,
    registry: AlgorithmRegistry,
    task: Task,
    plan: SlidePlan,
    bar: ProgressBar,
) -> AlgorithmResult:
    with tempfile.TemporaryDirectory(prefix="primaa-run-") as scratch:
        pool = ProcessPoolRunner(
            workers=min(settings.worker_count, max(1, len(plan.tiles))),
            cancel_dir=Path(scratch) / "cancel",
            max_pixels=settings.max_image_pixels,
            disabled_plugins=settings.disabled_plugins,
            plugin_modules=settings.plugins,
            log_format="json" if settings.log_format == "auto" else settings.log_format,
            log_level="warning",
            kill_grace=settings.kill_grace_seconds,
            memory_limit_mb=settings.worker_memory_limit_mb,
        )
        pool.start()
        try:
            tiling = TilingExecutor(
                pool,
                registry.get,
                workers=pool.workers,
                max_pixels=settings.max_image_pixels,
                tile_size=settings.slide_tile_size,
            )
            tiling.on_progress(
                lambda task_id, fraction: bar.update(fraction) if task_id == task.task_id else None
            )
            return await tiling.run_planned(task, plan)
        finally:
            await pool.close()
