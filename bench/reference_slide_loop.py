"""The plain loop issue 10's speed target is measured against, as a user would write it.

OpenSlide reads the slide in 2048-px tiles at level 0, tiles of glass are skipped, and
the scikit-image reference detector (``bench.reference_skimage``) runs on the others in
a ``multiprocessing`` pool; each tile's points are offset to level 0. No overlap and no
merge: nothing is done at the seams. Each worker opens the slide once and reads its own
tiles, so decoding is spread over the pool too (a stronger baseline than reading in the
parent and sending pixels over).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import openslide

from bench.reference_skimage import reference_detect
from bench.slide_jobs import reset_peak, status_mb

#: Side of a tile read at level 0.
TILE = 2048
#: A pixel is tissue when its channels spread more than this (glass is grey, stain is not)...
MIN_SATURATION = 25
#: ... or when it is this dark.
MAX_GLASS_DARKNESS = 200
#: A tile with less tissue than this fraction of its pixels is glass and skipped.
MIN_TISSUE_FRACTION = 0.01

_slide: openslide.OpenSlide | None = None


@dataclass(frozen=True)
class LoopRun:
    """What the reference loop took and found."""

    seconds: float
    tiles: int
    skipped: int
    points: npt.NDArray[np.float64]
    #: VmHWM in MB of this process (reset before the loop) and of each pool worker.
    parent_peak: float
    worker_peaks: tuple[float, ...]


def is_glass(rgb: npt.NDArray[np.uint8]) -> bool:
    """Too few stained or dark pixels to hold tissue."""
    saturation = rgb.max(axis=2) - rgb.min(axis=2)
    tissue = (saturation > MIN_SATURATION) | (rgb.mean(axis=2) < MAX_GLASS_DARKNESS)
    return bool(tissue.mean() < MIN_TISSUE_FRACTION)


def _open(path: str) -> None:
    global _slide
    _slide = openslide.OpenSlide(path)


def _ready(_: int) -> int:
    """Return once this worker is up (its initializer has opened the slide)."""
    time.sleep(0.2)
    return multiprocessing.current_process().pid or 0


def _detect(corner: tuple[int, int]) -> tuple[npt.NDArray[np.float64] | None, int, float]:
    """In a worker: read one tile, skip it if glass, else detect; points at level 0."""
    assert _slide is not None
    x, y = corner
    width, height = _slide.dimensions
    size = (min(TILE, width - x), min(TILE, height - y))
    rgb = np.asarray(_slide.read_region((x, y), 0, size).convert("RGB"))
    pid = multiprocessing.current_process().pid or 0
    if is_glass(rgb):
        return None, pid, status_mb("self")
    points = reference_detect(rgb) + np.array([x, y], np.float64)
    return points, pid, status_mb("self")


def run_reference_loop(path: Path, workers: int = 2) -> LoopRun:
    """Every tile of ``path`` through the pool; seconds from the first read to the last point."""
    with contextlib.closing(openslide.OpenSlide(str(path))) as slide:
        width, height = slide.dimensions
    corners = [(x, y) for y in range(0, height, TILE) for x in range(0, width, TILE)]
    context = multiprocessing.get_context("spawn")
    found: list[npt.NDArray[np.float64]] = []
    peaks: dict[int, float] = {}
    skipped = 0
    with context.Pool(workers, initializer=_open, initargs=(str(path),)) as pool:
        pool.map(_ready, range(workers), chunksize=1)
        reset_peak()
        start = time.perf_counter()
        for points, pid, peak in pool.imap_unordered(_detect, corners):
            peaks[pid] = max(peak, peaks.get(pid, 0.0))
            if points is None:
                skipped += 1
            else:
                found.append(points)
        seconds = time.perf_counter() - start
        parent_peak = status_mb("self")
    return LoopRun(
        seconds=seconds,
        tiles=len(corners),
        skipped=skipped,
        points=np.concatenate(found) if found else np.empty((0, 2), np.float64),
        parent_peak=parent_peak,
        worker_peaks=tuple(peaks.values()),
    )
