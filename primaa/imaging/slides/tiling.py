"""Tiles over a slide's tissue, at the algorithm's resolution, with overlap.

All geometry lives on the *working grid*: the slide's level-0 plane seen at
the algorithm's resolution, one unit per working pixel, ``downsample`` level-0
pixels each. Cores are a grid of integer half-open rectangles that partition
that plane; a tile reads its core grown by ``border`` on every side (clipped to
the slide), so an object near a core's edge is seen whole by the tile that
keeps it. Tiles are small frozen values: they travel to worker processes,
which read their pixels themselves.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

from primaa.imaging.slides.base import RGB, Slide
from primaa.imaging.slides.tissue import TissueMask

__all__ = ["DEFAULT_SNAP", "DEFAULT_TILE_SIZE", "Tile", "plan_slide", "plan_tiles"]

#: The longest side of a tile's read, in working pixels: 12 MB of RGB.
DEFAULT_TILE_SIZE = 2048
#: A pyramid level this close (relative) to the asked resolution is read as it is.
DEFAULT_SNAP = 0.03


@dataclasses.dataclass(frozen=True, slots=True)
class Tile:
    """One task's region: read ``width`` x ``height`` working pixels from (x, y).

    ``x``, ``y`` and ``core`` (x0, y0, x1, y1, half-open) are on the working
    grid; ``downsample`` is level-0 pixels per working pixel.
    """

    index: int
    x: int
    y: int
    width: int
    height: int
    core: tuple[int, int, int, int]
    downsample: float

    @property
    def level0_region(self) -> tuple[float, float, float, float]:
        """The read region in level-0 pixels: (x, y, width, height)."""
        d = self.downsample
        return self.x * d, self.y * d, self.width * d, self.height * d

    @property
    def core_local(self) -> tuple[int, int, int, int]:
        """The core in the tile's own pixel coordinates (x0, y0, x1, y1, half-open)."""
        x0, y0, x1, y1 = self.core
        return x0 - self.x, y0 - self.y, x1 - self.x, y1 - self.y

    def read(self, slide: Slide) -> RGB:
        """The tile's pixels at its working resolution, ``(height, width, 3)``."""
        x, y, _, _ = self.level0_region
        return slide.read_region(x, y, self.width, self.height, downsample=self.downsample)


def _edges(length: int, core: int) -> list[int]:
    """Split [0, length) into near-equal parts of at most ``core``: no thin last tile."""
    count = max(1, math.ceil(length / core))
    return [i * length // count for i in range(count + 1)]


def plan_tiles(
    dimensions: tuple[int, int],
    *,
    downsample: float,
    border: int = 0,
    tile_size: int = DEFAULT_TILE_SIZE,
    mask: TissueMask | None = None,
) -> tuple[Tile, ...]:
    """Tiles covering a level-0 plane of ``dimensions`` (or only its tissue, given a mask).

    Each read is at most ``tile_size`` working pixels a side: a core of at most
    ``tile_size - 2 * border`` plus ``border`` of context around it.
    """
    if not (math.isfinite(downsample) and downsample > 0):
        raise ValueError(f"downsample must be a positive number, got {downsample!r}")
    if border < 0:
        raise ValueError(f"border must not be negative, got {border}")
    core = tile_size - 2 * border
    if core < max(1, border):
        raise ValueError(
            f"a border of {border} px leaves a core of {core} px in tiles of {tile_size} px; "
            "the core must be at least as large as the border"
        )
    width = math.ceil(dimensions[0] / downsample)
    height = math.ceil(dimensions[1] / downsample)
    if width <= 0 or height <= 0:
        return ()
    tiles: list[Tile] = []
    rows, cols = _edges(height, core), _edges(width, core)
    for y0, y1 in itertools.pairwise(rows):
        for x0, x1 in itertools.pairwise(cols):
            if mask is not None and not mask.any_in(
                x0 * downsample, y0 * downsample, x1 * downsample, y1 * downsample
            ):
                continue
            left, top = max(0, x0 - border), max(0, y0 - border)
            right, bottom = min(width, x1 + border), min(height, y1 + border)
            tiles.append(
                Tile(
                    index=len(tiles),
                    x=left,
                    y=top,
                    width=right - left,
                    height=bottom - top,
                    core=(x0, y0, x1, y1),
                    downsample=downsample,
                )
            )
    return tuple(tiles)


def plan_slide(
    slide: Slide,
    *,
    mpp: float | None = None,
    downsample: float | None = None,
    border: int = 0,
    border_um: float | None = None,
    tile_size: int = DEFAULT_TILE_SIZE,
    mask: TissueMask | None = None,
    snap: float = DEFAULT_SNAP,
) -> tuple[Tile, ...]:
    """Tiles for an algorithm working at ``mpp`` µm/px (else at ``downsample``).

    The border is ``border_um`` micrometres when the slide states its
    resolution, else ``border`` working pixels; as with the resolution, the
    pixel values are the fallback for slides without one. A pyramid level
    within ``snap`` (relative) of the asked resolution is used as it is: a scan
    at 0.499 µm/px asked for 0.5 is read, not resampled by 1.002.
    """
    factor = slide.resolve_downsample(mpp=mpp, downsample=downsample)
    level = slide.levels[slide.nearest_level(factor)].downsample
    if abs(level / factor - 1.0) <= snap:
        factor = level
    context = border
    if border_um is not None and slide.mpp is not None:
        context = math.ceil(border_um / (slide.mpp * factor))
    return plan_tiles(
        slide.dimensions, downsample=factor, border=context, tile_size=tile_size, mask=mask
    )
