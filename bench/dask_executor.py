"""The Dask executor beside the local process pool, on the same machine and the same tasks.

Two workers each: the local pool with 2 worker processes, and a real Dask cluster on
loopback (a ``dask scheduler`` and 2 ``dask worker`` processes, 1 thread each, under
their nannies). Both stay up for the whole run; the measurements alternate between
them, so neighbours on a shared machine weigh on both alike.

* trivial-task overhead: a CPU-bound task that does nothing, one at a time, so each
  time is the executor's round trip (submit, run in a worker, result back);
* ``poi_detection`` throughput: the 512x512 H&E tiles of the nuclei dev set, two
  tasks in flight at a time (the service's CPU slots with 2 workers).

    python -m bench.dask_executor [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from bench.harness import print_table
from bench.loopback import he_tiles, tiny_png
from primaa.execution.dask.executor import DaskExecutor
from primaa.execution.pool import ProcessPoolRunner
from primaa.jobs.ports import Task
from primaa.plugins.builtin.nuclei import PoiDetection
from tests.support.dask_cluster import DaskCluster

PLUGINS = ("bench.plugin",)
WORKERS = 2

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


async def measure(directory: Path, cluster: DaskCluster, *, quick: bool) -> None:
    image = directory / "tiny.png"
    image.write_bytes(tiny_png())
    pngs, source = he_tiles(8 if quick else 32)
    tiles = []
    for n, png in enumerate(pngs):
        tiles.append(directory / f"tile-{n}.png")
        tiles[-1].write_bytes(png)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer tasks and rounds")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="primaa-bench-dask-") as scratch:
        directory = Path(scratch)
        (directory / "dask").mkdir()
        cluster = DaskCluster(directory / "dask")
        try:
            cluster.start(workers=WORKERS)
            asyncio.run(measure(directory, cluster, quick=args.quick))
        finally:
            cluster.stop()


if __name__ == "__main__":
    main()
