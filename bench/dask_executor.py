"""The Dask executor beside the local process pool, on the same machine and the same tasks.

Two workers each: the local pool with 2 worker processes, and a real Dask cluster on
loopback (a ``dask scheduler`` and 2 ``dask worker`` processes, 1 thread each, under
their nannies). Both stay up for the whole run; the measurements alternate between
them, so neighbours on a shared machine weigh on both alike.

* trivial-task overhead: a CPU-bound task that does nothing, one at a time, so each
  time is the executor's round trip (submit, run in a worker, result back);
* ``poi_detection`` throughput: the 512x512 H&E tiles of the nuclei dev set, two
  tasks in flight at a time (the service's CPU slots with 2 workers).

``--slide`` measures issue 11's target instead: the same slide job (``poi_detection``
on a pyramidal TIFF at 0.25 µm/px built from the nuclei dev crops, tissue in every
tile) through the tiling executor over each side, as the service and
``bench.slide_jobs`` run it, in alternating rounds (the order swapped each round),
with the workers' CPU seconds beside the wall time; then 20 flat-image jobs at once
through the tiling executor on the cluster. The target: the median of the rounds'
dask / local ratios at most 1.15.

    python -m bench.dask_executor [--quick]
    python -m bench.dask_executor --slide [--size PX] [--rounds N] [--data DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import psutil

from bench.harness import print_table
from bench.loopback import he_tiles, tiny_png
from bench.slides import BLOCK, CROP, DEFAULT_DATA
from primaa.execution.dask.executor import DaskExecutor
from primaa.execution.pool import ProcessPoolRunner
from primaa.execution.tiling import TilingExecutor
from primaa.jobs.ports import Task
from primaa.plugins.builtin.nuclei import PoiDetection
from primaa.plugins.registry import load_registry
from tests.support.dask_cluster import DaskCluster
from tests.support.slides import build_slide

PLUGINS = ("bench.plugin",)
WORKERS = 2
#: Flat-image jobs run on the cluster at once after the slide rounds (issue 11's target).
FLAT_JOBS = 20
SLIDE_MAX_PIXELS = 400_000_000
#: Level-0 pixels between the slide's blocks of tissue (one block per 2048 px tile at 0.5 µm/px).
TISSUE_CELL = 4096

Runner = Callable[[Task], Awaitable[object]]


async def trivial_round(run: Runner, image: Path, count: int, tag: str) -> list[float]:
    """Seconds per task, each submitted after the previous one came back."""
    times = []
    for n in range(count):
        started = time.perf_counter()
        await run(Task(f"{tag}-{n}", "bench_cpu_noop", image, {}))
        times.append(time.perf_counter() - started)
    return times


async def poi_round(run: Runner, tiles: Sequence[Path], tag: str) -> float:
    """Seconds for every tile, at most ``WORKERS`` tasks in flight."""
    parameters = PoiDetection.Parameters().load({})
    slots = asyncio.Semaphore(WORKERS)

    async def one(n: int, tile: Path) -> None:
        async with slots:
            await run(Task(f"{tag}-{n}", "poi_detection", tile, parameters))

    started = time.perf_counter()
    await asyncio.gather(*(one(n, tile) for n, tile in enumerate(tiles)))
    return time.perf_counter() - started


def _written(directory: Path, prefix: str, pngs: list[bytes]) -> list[Path]:
    """The PNGs as files ``prefix-N.png`` in ``directory``, for the executors to read."""
    paths = [directory / f"{prefix}-{n}.png" for n in range(len(pngs))]
    for path, png in zip(paths, pngs, strict=True):
        path.write_bytes(png)
    return paths


async def measure(directory: Path, cluster: DaskCluster, *, quick: bool) -> None:
    image = directory / "tiny.png"
    image.write_bytes(tiny_png())
    pngs, source = he_tiles(8 if quick else 32)
    tiles = _written(directory, "tile", pngs)
    pool = ProcessPoolRunner(
        workers=WORKERS,
        cancel_dir=directory / "cancel",
        max_pixels=50_000_000,
        plugin_modules=PLUGINS,
        log_format="json",
        log_level="warning",
    )
    pool.start()
    dask = DaskExecutor(
        scheduler=cluster.address,
        max_pixels=50_000_000,
        plugin_modules=PLUGINS,
        log_format="json",
        log_level="warning",
    )
    await dask.start()
    executors: dict[str, Runner] = {"local pool": pool.run, "dask": dask.run}
    trivial: dict[str, list[float]] = {name: [] for name in executors}
    poi: dict[str, list[float]] = {name: [] for name in executors}
    try:
        for run in executors.values():  # warm up: plugins loaded, first imports done
            await trivial_round(run, image, 3, "warm")
            await poi_round(run, tiles[:WORKERS], "warm")
        for round_number in range(2 if quick else 3):
            for name, run in executors.items():
                tag = f"{name}-{round_number}"
                trivial[name] += await trivial_round(run, image, 20 if quick else 100, tag)
                poi[name].append(await poi_round(run, tiles, tag))
    finally:
        await dask.close()
        await pool.close()
    megapixels = len(tiles) * 512 * 512 / 1e6
    rows = []
    for name in executors:
        overhead = statistics.median(trivial[name]) * 1000
        seconds = statistics.median(poi[name])
        rows.append(
            [
                name,
                f"{overhead:.1f}",
                f"{sorted(trivial[name])[int(len(trivial[name]) * 0.95)] * 1000:.1f}",
                f"{len(tiles) / seconds:.2f}",
                f"{megapixels / seconds:.2f}",
            ]
        )
    ratio_overhead = statistics.median(trivial["dask"]) / statistics.median(trivial["local pool"])
    ratio_poi = statistics.median(poi["local pool"]) / statistics.median(poi["dask"])
    print_table(
        f"Dask executor vs local pool, {WORKERS} workers each ({len(tiles)} tiles from {source})",
        ["executor", "trivial p50 ms", "trivial p95 ms", "poi tiles/s", "poi MP/s"],
        rows,
    )
    print(
        f"\ndask / local: trivial-task time x{ratio_overhead:.2f},"
        f" poi_detection throughput x{ratio_poi:.2f}"
    )


async def slide_round(
    tiling: TilingExecutor, slide: Path, parameters: dict[str, object], tag: str
) -> tuple[float, int]:
    """Seconds for the slide job, and the nuclei it found (the same on both sides)."""
    started = time.perf_counter()
    result = await tiling.run(Task(tag, "poi_detection", slide, parameters))
    seconds = time.perf_counter() - started
    assert result.geometry is not None
    return seconds, len(result.geometry["coordinates"])


def cpu_seconds(processes: Sequence[psutil.Process]) -> float:
    """User + system CPU time the processes have spent so far."""
    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            total += times.user + times.system
    return total


async def measure_slide(
    directory: Path, cluster: DaskCluster, slide: Path, *, rounds: int, tile_size: int
) -> None:
    registry = load_registry()
    algorithm = registry.get("poi_detection")
    assert algorithm is not None
    parameters = dict(algorithm.Parameters().load({}))
    pngs, source = he_tiles(FLAT_JOBS)
    flats = _written(directory, "flat", pngs)
    pool = ProcessPoolRunner(
        workers=WORKERS,
        cancel_dir=directory / "cancel",
        max_pixels=SLIDE_MAX_PIXELS,
        log_format="json",
        log_level="warning",
    )
    pool.start()
    dask = DaskExecutor(
        scheduler=cluster.address,
        max_pixels=SLIDE_MAX_PIXELS,
        log_format="json",
        log_level="warning",
    )
    await dask.start()
    sides = {
        "local pool": TilingExecutor(
            pool, registry.get, workers=WORKERS, max_pixels=SLIDE_MAX_PIXELS, tile_size=tile_size
        ),
        "dask": TilingExecutor(
            dask, registry.get, workers=WORKERS, max_pixels=SLIDE_MAX_PIXELS, tile_size=tile_size
        ),
    }
    rows: list[list[object]] = []
    ratios: list[float] = []
    times: dict[str, list[float]] = {name: [] for name in sides}
    try:
        for name, tiling in sides.items():  # warm up: plugins loaded, first imports done
            warm = [Task(f"warm-{name}-{n}", "poi_detection", flats[n], parameters) for n in (0, 1)]
            await asyncio.gather(*(tiling.run(task) for task in warm))
        workers = {
            "local pool": [psutil.Process(c.pid) for c in multiprocessing.active_children()],
            "dask": cluster.worker_processes(),
        }
        for round_number in range(rounds):
            seconds: dict[str, float] = {}
            order = list(sides) if round_number % 2 == 0 else list(reversed(sides))
            for name in order:
                cpu = cpu_seconds(workers[name])
                seconds[name], nuclei = await slide_round(
                    sides[name], slide, parameters, f"{name}-{round_number}"
                )
                cpu = cpu_seconds(workers[name]) - cpu
                times[name].append(seconds[name])
                rows.append([round_number + 1, name, seconds[name], cpu, nuclei])
            ratios.append(seconds["dask"] / seconds["local pool"])
            rows[-1].append(f"{ratios[-1]:.3f}")
            rows[-2].append("")
        started = time.perf_counter()
        flat_jobs = [
            Task(f"flat-{n}", "poi_detection", flat, parameters) for n, flat in enumerate(flats)
        ]
        outcomes = await asyncio.gather(
            *(sides["dask"].run(task) for task in flat_jobs), return_exceptions=True
        )
        flat_seconds = time.perf_counter() - started
    finally:
        await dask.close()
        await pool.close()
    print_table(
        f"poi_detection on the slide at 0.25 µm/px, tiles of"
        f" {tile_size} px, {WORKERS} workers each, alternating",
        ["round", "executor", "seconds", "workers cpu s", "nuclei", "dask / local"],
        rows,
    )
    completed = sum(1 for outcome in outcomes if not isinstance(outcome, BaseException))
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            print(f"flat job failed: {type(outcome).__name__}: {outcome}")
    local, remote = statistics.median(times["local pool"]), statistics.median(times["dask"])
    print(
        f"\nmedian over {rounds} rounds: local pool {local:.1f} s, dask {remote:.1f} s;"
        f" median dask / local ratio {statistics.median(ratios):.3f}"
        f" (target <= 1.15)"
    )
    print(
        f"{completed}/{len(flat_jobs)} flat-image jobs ({source.name}) completed on the cluster"
        f" in {flat_seconds:.1f} s"
    )


def build_bench_slide(path: Path, size: int, data: Path) -> int:
    """A slide at 0.25 µm/px whose work grows with its area: a block of 3 x 3 annotated
    crops (``bench.slides``' blocks) in every 4096 px cell, so that every tile of 2048 px
    at the detector's 0.5 µm/px holds tissue. Returns the number of crops placed."""
    sources = sorted(data.glob("*.png"))
    if not sources:
        raise SystemExit(f"no annotated PNGs in {data}")
    side = BLOCK * CROP
    corners = range(0, size - side + 1, TISSUE_CELL)
    positions = [
        (left + (n % BLOCK) * CROP, top + (n // BLOCK) * CROP)
        for top in corners
        for left in corners
        for n in range(BLOCK * BLOCK)
    ]
    build_slide(path, size=(size, size), sources=sources, positions=positions, mpp=0.25)
    return len(positions)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer tasks and rounds")
    parser.add_argument("--slide", action="store_true", help="a slide job on each side instead")
    parser.add_argument("--size", type=int, default=32_000, help="slide side in pixels")
    parser.add_argument("--tile-size", type=int, default=2048, help="slide_tile_size")
    parser.add_argument("--rounds", type=int, default=3, help="slide rounds on each side")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="primaa-bench-dask-") as scratch:
        directory = Path(scratch)
        (directory / "dask").mkdir()
        cluster = DaskCluster(directory / "dask")
        try:
            cluster.start(workers=WORKERS)
            if args.slide:
                slide = directory / "slide.tif"
                started = time.perf_counter()
                crops = build_bench_slide(slide, args.size, args.data)
                print(
                    f"built a {args.size:,} px slide of {crops} crops"
                    f" in {time.perf_counter() - started:.0f} s"
                )
                asyncio.run(
                    measure_slide(
                        directory, cluster, slide, rounds=args.rounds, tile_size=args.tile_size
                    )
                )
            else:
                asyncio.run(measure(directory, cluster, quick=args.quick))
        finally:
            cluster.stop()


if __name__ == "__main__":
    main()
