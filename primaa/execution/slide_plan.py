"""How one job runs on its image: as one task, or as tiles of a slide.

Planning opens the slide lazily (OpenSlide reads only the low-resolution level
of the tissue mask) and never decodes a flat image: its size comes from its
header. It blocks, so the service calls it in a thread. What an algorithm
declares decides the plan (``mpp``, ``border_um``, ``tiled``: see
:class:`primaa.plugins.algorithm.BaseAlgorithm`):

- it declares a resolution and the image is a slide, or a flat image larger
  than one tile: tiles over the tissue at that resolution, merged afterwards;
- it declares a resolution but not tiles: the whole slide read at that
  resolution as one image;
- it declares nothing: a flat image runs as one task as it always did; a
  slide is read whole at full resolution, within the flat-image pixel limit,
  and refused above it with an error that says why.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path
from typing import Final

from primaa.imaging.decode import ImageDecodeError, image_size
from primaa.imaging.slides import Slide, Tile, open_slide, plan_slide, plan_tiles, tissue_mask
from primaa.imaging.slides.base import MAX_READ_PIXELS
from primaa.imaging.slides.opener import DEFAULT_MAX_FLAT_PIXELS
from primaa.imaging.slides.openslide_backend import detect_vendor
from primaa.imaging.slides.tiling import DEFAULT_SNAP, DEFAULT_TILE_SIZE
from primaa.jobs.ports import TaskError
from primaa.plugins.algorithm import BaseAlgorithm

__all__ = ["SlidePlan", "plan_job"]

#: Without a stated resolution, a slide read in one piece has at most this longest side.
NO_MPP_PIECE_SIDE: Final = 4096
#: A slide job on several workers gets at least this many tiles per worker, tiles
#: halved down to MIN_TILE_SIZE for it: with 6 tiles of 2048 px on 2 workers
#: (``bench.slide_jobs``' 40,000 px slide), whichever worker drew the tiles with the
#: most nuclei decided when the job ended.
TILES_PER_WORKER: Final = 4
#: Smaller tiles read more border for the same core: at 1024 px, poi_detection's 48 px
#: border makes a tile read 1.23x its core's pixels (1.10x at 2048).
MIN_TILE_SIZE: Final = 1024


@dataclasses.dataclass(frozen=True, slots=True)
class SlidePlan:
    """The regions one job's algorithm runs on, and what it is told about their pixels."""

    tiles: tuple[Tile, ...]
    #: µm per pixel of what the algorithm gets; ``None`` when the slide does not say.
    pixel_size_um: float | None
    #: Level-0 pixels per pixel of what the algorithm gets.
    downsample: float
    #: Level-0 size of the image, (width, height).
    dimensions: tuple[int, int]
    #: One region holding the whole image: its result is moved to level 0, not merged.
    whole: bool = False
    #: The algorithm declared a resolution: it is told ``pixel_size_um`` and ``downsample``.
    informed: bool = True


def plan_job(
    path: Path,
    algorithm: BaseAlgorithm,
    *,
    max_pixels: int,
    tile_size: int = DEFAULT_TILE_SIZE,
    workers: int = 1,
) -> SlidePlan | None:
    """The plan for ``algorithm`` on the image at ``path``; ``None``: one task, as always.

    A slide with fewer than :data:`TILES_PER_WORKER` tiles per worker of
    ``workers`` is cut into smaller tiles (halved, down to :data:`MIN_TILE_SIZE`),
    so that the workers finish together.

    Raises :class:`TaskError` for a slide the algorithm cannot run on, and
    :class:`primaa.imaging.slides.SlideError` for a slide that cannot be read.
    """
    if detect_vendor(path) is None:
        return _plan_flat(path, algorithm, tile_size)
    with open_slide(path) as slide:
        if algorithm.mpp is None:
            return _whole_at_full_resolution(slide, algorithm, max_pixels)
        if not algorithm.tiled:
            return _in_one_piece(slide, algorithm.mpp)
        tiles = _tiles_for_workers(slide, algorithm, tile_size, workers)
        downsample = (
            tiles[0].downsample
            if tiles
            else slide.resolve_downsample(mpp=algorithm.mpp, downsample=1.0)
        )
        return SlidePlan(
            tiles=tiles,
            pixel_size_um=None if slide.mpp is None else slide.mpp * downsample,
            downsample=downsample,
            dimensions=slide.dimensions,
        )


def _tiles_for_workers(
    slide: Slide, algorithm: BaseAlgorithm, tile_size: int, workers: int
) -> tuple[Tile, ...]:
    """Tiles of ``tile_size``, halved while ``workers`` would get too few of them each."""
    cut = functools.partial(
        plan_slide,
        slide,
        mpp=algorithm.mpp,
        downsample=1.0,
        border_um=algorithm.border_um,
        border=_border_pixels(algorithm),
        mask=tissue_mask(slide),
    )
    tiles = cut(tile_size=tile_size)
    while workers > 1 and len(tiles) < TILES_PER_WORKER * workers:
        tile_size //= 2
        if tile_size < MIN_TILE_SIZE:
            break
        try:
            tiles = cut(tile_size=tile_size)
        except ValueError:
            break  # the border leaves no core in tiles this small
    return tiles


def _border_pixels(algorithm: BaseAlgorithm) -> int:
    """The border without a stated resolution: as if the pixels were at the algorithm's."""
    assert algorithm.mpp is not None
    return math.ceil(algorithm.border_um / algorithm.mpp)


def _plan_flat(path: Path, algorithm: BaseAlgorithm, tile_size: int) -> SlidePlan | None:
    """Tiles for a flat image larger than one tile, if the algorithm can take tiles."""
    if algorithm.mpp is None or not algorithm.tiled:
        return None
    try:
        width, height = image_size(path)
    except (ImageDecodeError, OSError):
        return None  # the worker says what is wrong with it, as for any image
    if max(width, height) <= tile_size or width * height > DEFAULT_MAX_FLAT_PIXELS:
        return None
    tiles = plan_tiles(
        (width, height), downsample=1.0, border=_border_pixels(algorithm), tile_size=tile_size
    )
    return SlidePlan(tiles=tiles, pixel_size_um=None, downsample=1.0, dimensions=(width, height))


def _whole(slide: Slide, downsample: float, *, informed: bool) -> SlidePlan:
    width, height = (math.ceil(side / downsample) for side in slide.dimensions)
    tile = Tile(
        index=0,
        x=0,
        y=0,
        width=width,
        height=height,
        core=(0, 0, width, height),
        downsample=downsample,
    )
    return SlidePlan(
        tiles=(tile,),
        pixel_size_um=None if slide.mpp is None else slide.mpp * downsample,
        downsample=downsample,
        dimensions=slide.dimensions,
        whole=True,
        informed=informed,
    )


def _whole_at_full_resolution(slide: Slide, algorithm: BaseAlgorithm, max_pixels: int) -> SlidePlan:
    width, height = slide.dimensions
    limit = min(max_pixels, MAX_READ_PIXELS)
    if width * height > limit:
        raise TaskError(
            f"{algorithm.name!r} declares no resolution (mpp), so it runs on whole images "
            f"only, and this slide of {width} x {height} px ({width * height / 1e6:.1f} MP) "
            f"is above the limit of {limit / 1e6:.1f} MP for whole images; an algorithm "
            "runs on slides by declaring mpp (see docs/plugins.md)"
        )
    return _whole(slide, 1.0, informed=False)


def _in_one_piece(slide: Slide, mpp: float) -> SlidePlan:
    """The whole slide at ``mpp`` (without a stated resolution: at most 4,096 px a side)."""
    fallback = max(1.0, max(slide.dimensions) / NO_MPP_PIECE_SIDE)
    factor = slide.resolve_downsample(mpp=mpp, downsample=fallback)
    level = slide.levels[slide.nearest_level(factor)].downsample
    if abs(level / factor - 1.0) <= DEFAULT_SNAP:
        factor = level
    plan = _whole(slide, factor, informed=True)
    tile = plan.tiles[0]
    if tile.width * tile.height > MAX_READ_PIXELS:
        raise TaskError(
            f"the slide is {tile.width} x {tile.height} px at {mpp:g} µm/px, above the "
            f"limit of {MAX_READ_PIXELS / 1e6:.0f} MP for a slide read in one piece"
        )
    return plan
