"""A slide job end to end on warm workers: speed with 1 and 2 workers, and memory.

    python -m bench.slide_jobs [--quick] [--size PX] [--tissue F] [--repeat N]
                               [--tile-size PX] [--cache DIR] [--data DIR]

Builds a JPEG-tiled pyramidal TIFF at 0.25 µm/px from the annotated crops of the
nuclei dev set, 24,000 px square with 40 % of it tissue by default (blocks of 3 x 3
crops on glass, ``bench.slide_targets.cached_slide``, kept under ``--cache`` for the
next run; ``--tissue 0``: each crop placed once, the few tiles of the first
version of this bench), then runs ``poi_detection`` on it as the service and
``primaa run`` do: the process pool under
:class:`primaa.execution.tiling.TilingExecutor` (plan in a thread: tissue mask,
tiles at the algorithm's 0.5 µm/px; tiles across the workers; merge as they
arrive). The workers are warmed first (a small flat job), as a running service's
are; ``primaa run`` adds their start-up (printed apart). With 1 worker, then 2,
``--repeat`` times: seconds (``plan s`` of them: the tissue mask and the tiles,
before any tile runs), level-0 megapixels of tissue tiles per second, the
workers' peak RSS (VmHWM before the pool closes), this process's peak RSS (what
the service holds: plan and merged objects, never pixels; reset before each run
through /proc/self/clear_refs), and F1 at 8 px against the annotated centres.
``worker cpu s`` is the CPU time the workers spent on the job: the same work with 1
or 2 workers means no overhead from tiling across processes, and seconds below it
with 2 workers means both cores worked. ``waited s`` is the workers' time runnable
but waiting for a CPU others held (``/proc/PID/schedstat``), ``idle s`` the rest of
workers x seconds: a worker with no tile (the plan, the last round, the merge).
Each round ends with the speed-up of 2 workers over 1 (seconds against seconds:
with 2 workers a small slide may be cut into smaller tiles, which cover less glass,
so its tissue MP differ) and the load average before it; it needs two idle cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import openslide
from PIL import Image

from bench.slides import DEFAULT_DATA, crop_positions
from primaa.evaluation import score_points
from primaa.execution.pool import ProcessPoolRunner
from primaa.execution.tiling import TilingExecutor
from primaa.jobs.ports import Task
from primaa.plugins.registry import load_registry
from tests.support.slides import build_slide


def status_mb(pid: int | str, key: str = "VmHWM") -> float:
    """A memory line of ``/proc/PID/status`` in MB (0 once the process is gone)."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _workers_cpu_seconds() -> float:
    """User + system CPU time of this process's children alive now (the pool's workers)."""
    total = 0
    for child in multiprocessing.active_children():
        with contextlib.suppress(OSError, ValueError):
            fields = Path(f"/proc/{child.pid}/stat").read_text().rpartition(")")[2].split()
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _workers_waiting_seconds() -> float:
    """Time this process's children alive now spent runnable but waiting for a CPU
    (``/proc/PID/schedstat``, second field): what neighbours on the cores cost them."""
    total = 0
    for child in multiprocessing.active_children():
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += int(Path(f"/proc/{child.pid}/schedstat").read_text().split()[1])
    return total / 1e9


def reset_peak() -> None:
    """Start this process's VmHWM again from its current RSS (Linux: clear_refs 5)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


async def run_slide_job(
    slide: Path,
    warm_image: Path,
    workers: int,
    tile_size: int,
    scratch: Path,
    algorithm_name: str = "poi_detection",
) -> dict[str, object]:
    """``algorithm_name`` on ``slide`` through the pool under the tiling executor, warm workers.

    Figures of the slide run alone (the warm-up excluded); ``worker_peaks`` is each
    worker's VmHWM in MB, read before the pool closes.
    """
    registry = load_registry()
    algorithm = registry.get(algorithm_name)
    assert algorithm is not None, f"{algorithm_name} is not installed"
    parameters = dict(algorithm.Parameters().load({}))
    pool = ProcessPoolRunner(
        workers=workers,
        cancel_dir=scratch / f"cancel-{workers}",
        max_pixels=400_000_000,
        log_format="json",
        log_level="warning",
    )
    started = time.perf_counter()
    pool.start()
    tiling = TilingExecutor(
        pool, registry.get, workers=workers, max_pixels=400_000_000, tile_size=tile_size
    )
    try:
        warm = [Task(f"warm-{n}", algorithm_name, warm_image, parameters) for n in range(workers)]
        await asyncio.gather(*(tiling.run(task) for task in warm))
        start_up = time.perf_counter() - started
        reset_peak()
        cpu = _workers_cpu_seconds()
        waited = _workers_waiting_seconds()
        start = time.perf_counter()
        task = Task("slide", algorithm_name, slide, parameters)
        plan = await tiling.plan(task)
        assert plan is not None
        planned = time.perf_counter() - start
        result = await tiling.run_planned(task, plan)
        seconds = time.perf_counter() - start
        cpu = _workers_cpu_seconds() - cpu
        waited = _workers_waiting_seconds() - waited
        parent = status_mb("self")
        worker_peaks = [
            status_mb(child.pid) for child in multiprocessing.active_children() if child.pid
        ]
    finally:
        await pool.close()
    assert result.geometry is not None
    return {
        "start_up": start_up,
        "seconds": seconds,
        "plan_seconds": planned,
        "cpu": cpu,
        "waited": waited,
        "megapixels": result.measurements["analysed_megapixels"],
        "tiles": result.measurements["tiles"],
        "found": np.asarray(result.geometry["coordinates"], np.float64).reshape(-1, 2),
        "worker_peak": max(worker_peaks, default=0.0),
        "worker_peaks": worker_peaks,
        "parent_peak": parent,
    }


def _slide(args: argparse.Namespace, sources: list[Path], scratch: Path) -> tuple[Path, Any]:
    """The slide to run on and its annotated centres."""
    size = args.size or (12_000 if args.quick else 24_000)
    if args.tissue > 0:
        from bench.slide_targets import cached_slide  # it imports this module

        path, centres, _ = cached_slide(args.cache, sources, size, args.tissue)
        return path, centres
    slide = scratch / "slide.tif"
    built = build_slide(
        slide,
        size=(size, size),
        sources=sources,
        positions=crop_positions(len(sources), size, seed=0),
        mpp=0.25,
    )
    return slide, built.centres


def main() -> int:
    from bench.harness import print_table

    parser = argparse.ArgumentParser(prog="python -m bench.slide_jobs", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a 12,000 px slide")
    parser.add_argument("--size", type=int, help="slide side in pixels (default 24,000)")
    parser.add_argument("--tissue", type=float, default=0.4, help="fraction of the slide")
    parser.add_argument("--repeat", type=int, default=2, help="rounds of 1 then 2 workers")
    parser.add_argument("--tile-size", type=int, default=2048, help="slide_tile_size")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(tempfile.gettempdir()) / "primaa-slide-targets",
        help="where a slide with --tissue is kept for the next run",
    )
    args = parser.parse_args()
    sources = sorted(args.data.glob("*.png"))
    if not sources:
        print(f"no annotated PNGs in {args.data}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="primaa-slide-jobs-") as directory:
        scratch = Path(directory)
        slide, centres = _slide(args, sources, scratch)
        with openslide.OpenSlide(slide) as opened:
            size = opened.dimensions[0]
        warm_image = scratch / "warm.png"
        with Image.open(sources[0]) as crop:
            crop.convert("RGB").crop((0, 0, 256, 256)).save(warm_image)
        for _ in range(args.repeat):
            rows: list[list[object]] = []
            speeds: dict[int, float] = {}
            idle: dict[int, float] = {}
            seconds_of: dict[int, float] = {}
            load = os.getloadavg()
            for workers in (1, 2):
                run = asyncio.run(
                    run_slide_job(slide, warm_image, workers, args.tile_size, scratch)
                )
                megapixels = float(run["megapixels"])  # type: ignore[arg-type]
                seconds = float(run["seconds"])  # type: ignore[arg-type]
                cpu, waited = float(run["cpu"]), float(run["waited"])  # type: ignore[arg-type]
                idle[workers] = workers * seconds - cpu - waited
                seconds_of[workers] = seconds
                speeds[workers] = megapixels / seconds
                found = run["found"]
                assert isinstance(found, np.ndarray)
                rows.append(
                    [
                        workers,
                        run["tiles"],
                        megapixels,
                        run["start_up"],
                        seconds,
                        run["plan_seconds"],
                        speeds[workers],
                        cpu,
                        waited,
                        idle[workers],
                        run["worker_peak"],
                        run["parent_peak"],
                        len(found),
                        score_points(found, centres, radius=8.0).f1,
                    ]
                )
            print_table(
                f"poi_detection on a {size:,} px slide at 0.25 µm/px, tiles of up to "
                f"{args.tile_size} px at 0.5 µm/px, warm workers",
                [
                    "workers",
                    "tiles",
                    "tissue MP",
                    "start-up s",
                    "seconds",
                    "plan s",
                    "MP/s",
                    "worker cpu s",
                    "waited s",
                    "idle s",
                    "worker peak MB",
                    "parent peak MB",
                    "nuclei",
                    "F1@8",
                ],
                rows,
            )
            after = os.getloadavg()
            print(
                f"2 workers / 1 worker: {seconds_of[1] / seconds_of[2]:.2f}x "
                f"(load average {load[0]:.2f} before, {after[0]:.2f} after)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
