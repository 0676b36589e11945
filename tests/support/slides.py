"""Build whole-slide test images: real H&E tiles on glass, as JPEG-tiled pyramidal TIFF.

Each source is a PNG with a CSV of annotated nucleus centres beside it (``x,y``,
pixel column and row); the centres move with the tile into slide coordinates,
so a detector run on the slide can be scored against the same truth. Written
by pyvips, lazily, so a 20,000-pixel-square slide costs a few seconds and
little memory; OpenSlide reads the result as "generic-tiff", with the µm per
pixel from the TIFF resolution tags. Reused by the benchmarks.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyvips
from PIL import Image

__all__ = [
    "DOT",
    "GLASS",
    "NUCLEI",
    "PINK",
    "BuiltSlide",
    "Placement",
    "build_dotted_slide",
    "build_slide",
    "scatter",
]

#: The colour of empty glass in a bright-field scan.
GLASS = (240, 235, 240)
#: The annotated H&E tiles shipped with the tests.
NUCLEI = Path(__file__).resolve().parents[1] / "data" / "nuclei"


@dataclasses.dataclass(frozen=True)
class Placement:
    """A source image put on the slide with its top-left corner at (x, y), level 0."""

    source: Path
    x: int
    y: int
    width: int
    height: int


@dataclasses.dataclass(frozen=True)
class BuiltSlide:
    """A slide written to ``path`` and what is on it."""

    path: Path
    size: tuple[int, int]
    mpp: float | None
    placements: tuple[Placement, ...]
    #: Annotated nucleus centres in level-0 pixels, (N, 2) x, y.
    centres: npt.NDArray[np.float64]


def _centres(source: Path) -> npt.NDArray[np.float64]:
    table = source.with_suffix(".csv")
    if not table.exists():
        return np.empty((0, 2), np.float64)
    values = np.loadtxt(table, delimiter=",", skiprows=1, ndmin=2, dtype=np.float64)
    return values.reshape(-1, 2)


def scatter(
    size: tuple[int, int], count: int, tile: tuple[int, int], *, gap: int = 64, seed: int = 0
) -> list[tuple[int, int]]:
    """``count`` distinct non-overlapping top-left corners for tiles of ``tile`` size."""
    cols = (size[0] - gap) // (tile[0] + gap)
    rows = (size[1] - gap) // (tile[1] + gap)
    if cols * rows < count:
        raise ValueError(f"{count} tiles of {tile} do not fit on {size}")
    rng = np.random.default_rng(seed)
    cells = rng.choice(cols * rows, size=count, replace=False)
    return [
        (gap + int(c % cols) * (tile[0] + gap), gap + int(c // cols) * (tile[1] + gap))
        for c in sorted(cells)
    ]


def _glass(size: tuple[int, int], noise: float, seed: int) -> pyvips.Image:
    """Glass with slight noise: one random patch, repeated (cheap at any size)."""
    rng = np.random.default_rng(seed)
    patch = np.array(GLASS, np.float64) + rng.normal(0.0, noise, (256, 256, 3))
    patch_image = pyvips.Image.new_from_array(
        np.clip(np.rint(patch), 0, 255).astype(np.uint8), interpretation="srgb"
    )
    across, down = -(-size[0] // 256), -(-size[1] // 256)
    return patch_image.replicate(across, down).crop(0, 0, size[0], size[1])


def build_slide(
    path: Path,
    *,
    size: tuple[int, int],
    sources: Sequence[Path],
    positions: Sequence[tuple[int, int]],
    mpp: float | None = 0.5,
    compression: str = "jpeg",
    quality: int = 90,
    tile_size: int = 256,
    noise: float = 2.0,
    seed: int = 0,
) -> BuiltSlide:
    """Write a pyramidal tiled TIFF with ``sources`` (cycled) at ``positions`` on glass.

    ``mpp=None`` writes pyvips' default resolution (1 pixel per millimetre), a
    value no scanner writes, which the reader must report as unknown.
    ``compression="deflate"`` gives a lossless slide for exact comparisons.
    """
    canvas = _glass(size, noise, seed)
    placements: list[Placement] = []
    centres: list[npt.NDArray[np.float64]] = []
    for source, (x, y) in zip(itertools.cycle(sources), positions, strict=False):
        with Image.open(source) as opened:
            rgb = np.asarray(opened.convert("RGB"))
        height, width = rgb.shape[:2]
        canvas = canvas.insert(pyvips.Image.new_from_array(rgb, interpretation="srgb"), x, y)
        placements.append(Placement(source, x, y, width, height))
        centres.append(_centres(source) + np.array([x, y], np.float64))
    options: dict[str, object] = {
        "tile": True,
        "pyramid": True,
        "compression": compression,
        "tile_width": tile_size,
        "tile_height": tile_size,
    }
    if compression == "jpeg":
        options["Q"] = quality
    if mpp is not None:
        pixels_per_mm = 1000.0 / mpp
        options.update(xres=pixels_per_mm, yres=pixels_per_mm, resunit="cm")
    canvas.tiffsave(str(path), **options)
    return BuiltSlide(
        path=path,
        size=size,
        mpp=mpp,
        placements=tuple(placements),
        centres=np.concatenate(centres) if centres else np.empty((0, 2), np.float64),
    )


#: Pink like eosin-stained tissue, and the dark dots planted on it.
PINK = (236, 180, 210)
DOT = (40, 20, 70)


def build_dotted_slide(
    path: Path,
    *,
    size: tuple[int, int],
    mpp: float | None = 0.25,
    spacing: int = 48,
    radius: int = 6,
    margin: int = 256,
    marks: Sequence[tuple[tuple[int, int], tuple[int, int, int]]] = (),
    seed: int = 0,
) -> BuiltSlide:
    """A lossless pyramidal slide: a pink rectangle of tissue ``margin`` px inside glass,
    dark dots of ``radius`` on a jittered grid over it (their centres are the truth, exact
    at level 0), and ``marks``: 8 x 8 squares of a colour from (x, y), e.g. pure red (pure at
    the pyramid's next levels too, from even x and y)."""
    width, height = size
    rng = np.random.default_rng(seed)
    canvas = np.empty((height, width, 3), np.uint8)
    canvas[...] = GLASS
    canvas[margin : height - margin, margin : width - margin] = PINK
    jitter = spacing // 6
    ys = np.arange(margin + spacing // 2, height - margin - spacing // 2, spacing)
    xs = np.arange(margin + spacing // 2, width - margin - spacing // 2, spacing)
    centres = np.array([(x, y) for y in ys for x in xs], np.int64) + rng.integers(
        -jitter, jitter + 1, (len(ys) * len(xs), 2)
    )
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    disk = xx**2 + yy**2 <= radius**2
    for x, y in centres:
        patch = canvas[y - radius : y + radius + 1, x - radius : x + radius + 1]
        patch[disk] = DOT
    for (x, y), colour in marks:
        canvas[y : y + 8, x : x + 8] = colour
    image = pyvips.Image.new_from_array(canvas, interpretation="srgb")
    options: dict[str, object] = {
        "tile": True,
        "pyramid": True,
        "compression": "deflate",
        "tile_width": 256,
        "tile_height": 256,
    }
    if mpp is not None:
        options.update(xres=1000.0 / mpp, yres=1000.0 / mpp, resunit="cm")
    image.tiffsave(str(path), **options)
    return BuiltSlide(
        path=path, size=size, mpp=mpp, placements=(), centres=centres.astype(np.float64)
    )
