"""Whole-slide images: lazy reads at any resolution, a tissue mask, tiles, merging.

This package runs inside worker processes: it imports no web framework, no
database and nothing of the jobs core. A worker receives a slide's path and a
:class:`Tile`, opens the slide itself and reads only its tile, so pixels never
cross a process boundary::

    with open_slide(path) as slide:
        tiles = plan_slide(slide, mpp=0.5, border_um=20, mask=tissue_mask(slide))
    # in a worker, for each tile (the slide stays open in the worker between tiles):
    pixels = read_tile(path, tile)
    # back in the parent, tile by tile:
    kept = merger.add_points(tile, centres_found_in_pixels)
"""

from __future__ import annotations

from primaa.imaging.slides.base import RGB, Level, Slide, SlideError
from primaa.imaging.slides.cache import SlideCache, read_tile
from primaa.imaging.slides.merge import (
    TileMerger,
    in_core,
    polygon_centres,
    seam_duplicates,
    to_level0,
)
from primaa.imaging.slides.opener import open_slide
from primaa.imaging.slides.tiling import Tile, plan_slide, plan_tiles
from primaa.imaging.slides.tissue import TISSUE_MPP, TissueMask, tissue_mask, tissue_pixels

__all__ = [
    "RGB",
    "TISSUE_MPP",
    "Level",
    "Slide",
    "SlideCache",
    "SlideError",
    "Tile",
    "TileMerger",
    "TissueMask",
    "in_core",
    "open_slide",
    "plan_slide",
    "plan_tiles",
    "polygon_centres",
    "read_tile",
    "seam_duplicates",
    "tissue_mask",
    "tissue_pixels",
    "to_level0",
]
