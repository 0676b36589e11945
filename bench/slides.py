"""Whole-slide pipeline: time, worker memory and accuracy of mask, plan, tiles and merge.

    python -m bench.slides [--quick] [--size PX] [--workers N] [--data DIR]

Builds a JPEG-tiled pyramidal TIFF at 0.5 µm/px from the annotated crops of the
nuclei dev set (blocks of 3 x 3 crops side by side, so seams cross tissue, on
glass), then for each tile size: tissue mask, plan at 0.5 µm/px with the nucleus
detector's margin, tiles read and detected in worker processes (each opens the
slide itself and receives only a Tile), merged in level-0 coordinates and scored
against the annotated centres; seam_duplicates then finds the nuclei kept twice
across a seam. The reference row runs the detector on each crop alone, as a
flat-image job would. Worker memory is each worker's peak RSS
(spawned processes, so nothing is inherited from this one).
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

from primaa.evaluation import micro_average, score_points
from primaa.imaging.slides import (
    Tile,
    TileMerger,
    open_slide,
    plan_slide,
    read_tile,
    seam_duplicates,
    tissue_mask,
)
from primaa.plugins.builtin.nuclei_detector import detect_nuclei, tile_margin
from tests.support.slides import build_slide, scatter

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared/data/nuclei-dev"
CROP = 512
BLOCK = 3
#: Two centres of the merged result closer than this are one nucleus kept twice.
TWICE_PX = 4.0


def _detect_tile(path: str, tile: Tile) -> tuple[Tile, npt.NDArray[np.float64], int]:
    """In a worker: read one tile (the slide stays open in the worker), detect nuclei."""
    return tile, detect_nuclei(read_tile(path, tile)), _peak_rss()


def _peak_rss() -> int:
    """This process's peak RSS (VmHWM; ru_maxrss keeps the parent's across fork and exec)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def crop_positions(count: int, size: int, seed: int) -> list[tuple[int, int]]:
    """Crops in blocks of BLOCK x BLOCK side by side, the blocks scattered on glass."""
    side = BLOCK * CROP
    blocks = -(-count // (BLOCK * BLOCK))
    corners = scatter((size, size), blocks, (side, side), gap=512, seed=seed)
    cells = [(i % BLOCK, i // BLOCK) for i in range(BLOCK * BLOCK)]
    return [(x + c * CROP, y + r * CROP) for x, y in corners for c, r in cells][:count]


def _twice(points: npt.NDArray[np.float64]) -> int:
    """Pairs closer than TWICE_PX, on a grid so the count stays linear."""
    cells: dict[tuple[int, int], list[int]] = {}
    for index, (x, y) in enumerate(points):
        cells.setdefault((int(x // TWICE_PX), int(y // TWICE_PX)), []).append(index)
    pairs = 0
    for (cx, cy), members in cells.items():
        near = [
            j for dx in (-1, 0, 1) for dy in (-1, 0, 1) for j in cells.get((cx + dx, cy + dy), [])
        ]
        for i in members:
            gaps = np.hypot(*(points[near] - points[i]).T)
            pairs += int(((gaps < TWICE_PX) & (np.array(near) > i)).sum())
    return pairs


def _run(path: Path, truth: npt.NDArray[np.float64], tile_size: int, workers: int) -> list[object]:
    start = time.perf_counter()
    with open_slide(path) as slide:
        mask = tissue_mask(slide)
        masked = time.perf_counter()
        tiles = plan_slide(slide, mpp=0.5, border=tile_margin(22.0), tile_size=tile_size, mask=mask)
        every = plan_slide(slide, mpp=0.5, border=tile_margin(22.0), tile_size=tile_size)
    merger = TileMerger()
    peaks: list[int] = []
    pixels = 0
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        futures = [pool.submit(_detect_tile, str(path), tile) for tile in tiles]
        for future in futures:
            tile, points, peak = future.result()
            merger.add_points(tile, points)
            peaks.append(peak)
            pixels += tile.width * tile.height
    elapsed = time.perf_counter() - start
    merged = merger.centres()
    twins = seam_duplicates(merged, merger.tile_indices(), tiles, radius=TWICE_PX)
    return [
        tile_size,
        f"{len(tiles)}/{len(every)}",
        masked - start,
        elapsed,
        pixels / 1e6 / elapsed,
        max(peaks) / 2**20,
        len(merged),
        score_points(merged, truth, radius=8.0).f1,
        _twice(merged),
        f"{int(twins.sum())} / {_twice(merged[~twins])}",
    ]


def _reference(sources: list[Path]) -> list[object]:
    counts = []
    found = 0
    for source in sources:
        with Image.open(source) as image:
            points = detect_nuclei(np.asarray(image.convert("RGB")))
        truth = np.loadtxt(source.with_suffix(".csv"), delimiter=",", skiprows=1, ndmin=2)
        counts.append(score_points(points, truth, radius=8.0))
        found += len(points)
    total = micro_average(counts)
    return ["crops alone", "-", "-", "-", "-", "-", found, total.f1, "-", "-"]


def main() -> int:
    from bench.harness import print_table

    parser = argparse.ArgumentParser(prog="python -m bench.slides", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a 12,000 px slide, one tile size")
    parser.add_argument("--size", type=int, help="slide side in pixels (default 40,000)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    size = args.size or (12_000 if args.quick else 40_000)
    sources = sorted(args.data.glob("*.png"))
    if not sources:
        print(f"no annotated PNGs in {args.data}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="primaa-slides-") as scratch:
        path = Path(scratch) / "slide.tif"
        start = time.perf_counter()
        built = build_slide(
            path,
            size=(size, size),
            sources=sources,
            positions=crop_positions(len(sources), size, seed=0),
            mpp=0.5,
        )
        build = time.perf_counter() - start
        with open_slide(path) as slide:
            levels = len(slide.levels)
        print_table(
            "Slide (built with pyvips, JPEG Q90, 256 px tiles)",
            ["side px", "levels", "file MB", "level 0 RGB MB", "crops", "nuclei", "build s"],
            [
                [
                    size,
                    levels,
                    path.stat().st_size / 2**20,
                    size * size * 3 / 2**20,
                    len(built.placements),
                    len(built.centres),
                    build,
                ]
            ],
        )
        rows = [_reference(sources)]
        for tile_size in (1024,) if args.quick else (512, 1024, 2048):
            rows.append(_run(path, built.centres, tile_size, args.workers))
        print_table(
            f"Mask, plan, {args.workers} workers detect nuclei tile by tile, merge (0.5 µm/px)",
            [
                "tile px",
                "tiles/grid",
                "mask s",
                "total s",
                "MP/s",
                "worker peak MB",
                "nuclei",
                "F1@8",
                f"pairs<{TWICE_PX:g}px",
                "seam twins / pairs left",
            ],
            rows,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
