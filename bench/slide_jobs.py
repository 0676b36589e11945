"""A slide job end to end, as ``primaa run`` runs it: speed with 1 and 2 workers, memory.

    python -m bench.slide_jobs [--quick] [--size PX] [--algorithm NAME] [--data DIR]

Builds a JPEG-tiled pyramidal TIFF at 0.25 µm/px from the annotated crops of the
nuclei dev set (blocks of 3 x 3 crops on glass, as ``bench.slides``), then runs
``poi_detection`` on it through :func:`primaa.cli_slides.run_slide`: the plan
(tissue mask, tiles at the algorithm's 0.5 µm/px), the process pool under the
tiling executor, the merge. Once with 1 worker, once with 2; for each: seconds,
level-0 megapixels of tissue tiles per second, worker peak RSS (VmHWM of each
worker before the pool closes) and this process's peak RSS (reset before each
run through /proc/self/clear_refs), plus F1 at 8 px against the annotated
centres. The last line is the speed-up of 2 workers over 1.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.slides import DEFAULT_DATA, _positions
from primaa.cli_slides import plan_image, run_slide
from primaa.config import load_settings
from primaa.evaluation import score_points
from primaa.execution import pool as pool_module
from primaa.plugins.registry import load_registry
from tests.support.slides import build_slide


def _status_kb(pid: int | str, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(f"{key}:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _reset_peak() -> None:
    """Start this process's VmHWM again from its current RSS (Linux: clear_refs 5)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


class _WorkerPeaks:
    """Peak RSS of the pool's workers, read just before the pool stops them."""

    def __init__(self) -> None:
        self.peaks_mb: list[float] = []
        self._close = pool_module.ProcessPoolRunner.close

    def __enter__(self) -> _WorkerPeaks:
        original = self._close
        peaks = self.peaks_mb

        async def close(runner: pool_module.ProcessPoolRunner) -> None:
            for child in multiprocessing.active_children():
                if child.pid is not None:
                    peaks.append(_status_kb(child.pid, "VmHWM") / 1024)
            await original(runner)

        pool_module.ProcessPoolRunner.close = close  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        pool_module.ProcessPoolRunner.close = self._close  # type: ignore[method-assign]


def main() -> int:
    from bench.harness import print_table

    parser = argparse.ArgumentParser(prog="python -m bench.slide_jobs", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a 12,000 px slide")
    parser.add_argument("--size", type=int, help="slide side in pixels (default 40,000)")
    parser.add_argument("--algorithm", default="poi_detection")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    size = args.size or (12_000 if args.quick else 40_000)
    sources = sorted(args.data.glob("*.png"))
    if not sources:
        print(f"no annotated PNGs in {args.data}", file=sys.stderr)
        return 1
    registry = load_registry()
    algorithm = registry.get(args.algorithm)
    if algorithm is None:
        print(f"unknown algorithm {args.algorithm!r}", file=sys.stderr)
        return 1
    parameters = algorithm.Parameters().load({})
    rows: list[list[object]] = []
    with tempfile.TemporaryDirectory(prefix="primaa-slide-jobs-") as scratch:
        path = Path(scratch) / "slide.tif"
        built = build_slide(
            path,
            size=(size, size),
            sources=sources,
            positions=_positions(len(sources), size, seed=0),
            mpp=0.25,
        )
        speeds = {}
        for workers in (1, 2):
            settings = load_settings(
                env={}, overrides={"workers": workers, "data_dir": Path(scratch) / "data"}
            )
            _reset_peak()
            with _WorkerPeaks() as peaks:
                start = time.perf_counter()
                plan = plan_image(settings, algorithm, path)
                assert plan is not None, "a pyramidal slide is planned as tiles"
                result = run_slide(settings, registry, algorithm, path, parameters, plan)
                seconds = time.perf_counter() - start
            assert result.geometry is not None
            found = np.asarray(result.geometry["coordinates"], np.float64).reshape(-1, 2)
            megapixels = result.measurements["analysed_megapixels"]
            speeds[workers] = megapixels / seconds
            rows.append(
                [
                    workers,
                    len(plan.tiles),
                    megapixels,
                    seconds,
                    speeds[workers],
                    max(peaks.peaks_mb, default=0.0),
                    _status_kb("self", "VmHWM") / 1024,
                    len(found),
                    score_points(found, built.centres, radius=8.0).f1,
                ]
            )
    print_table(
        f"{args.algorithm} on a {size:,} px slide at 0.25 µm/px (tiles at its mpp), "
        "through primaa run's path",
        [
            "workers",
            "tiles",
            "tissue MP",
            "seconds",
            "MP/s",
            "worker peak MB",
            "parent peak MB",
            "nuclei",
            "F1@8",
        ],
        rows,
    )
    print(f"2 workers / 1 worker: {speeds[2] / speeds[1]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
