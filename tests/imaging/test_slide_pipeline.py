"""Mask, plan, read tiles, detect, merge: as accurate as detecting on the whole region.

The nucleus detector runs on every tile of a slide whose H&E block is cut by
many seams; merged, its detections score against the annotated centres as well
as one run over the whole block (with the same glass around it: the detector's
threshold adapts to what it sees). The centre rule keeps an object once when
the tiles agree on its centre; the detector's centre can move by a pixel or two
with a tile's context, so a nucleus on a seam is now and then kept by both
tiles (or by neither): that rate is measured here, and seam_duplicates finds the
doubles.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from primaa.evaluation import score_points
from primaa.imaging.slides import (
    TileMerger,
    open_slide,
    plan_slide,
    seam_duplicates,
    tissue_mask,
)
from primaa.plugins.builtin.nuclei_detector import detect_nuclei, tile_margin
from tests.imaging.conftest import SOURCES
from tests.support.slides import BuiltSlide, build_slide

ORIGIN = (1000, 744)
#: Glass around the block for the whole-region run, as the tiles at its edges see.
MARGIN = 150


@pytest.fixture(scope="module")
def block(slides_dir: Path) -> BuiltSlide:
    """Four annotated 512 px crops side by side: a 1024 px square of tissue on glass."""
    x, y = ORIGIN
    return build_slide(
        slides_dir / "block.tif",
        size=(3000, 2500),
        sources=[SOURCES[0], SOURCES[1], SOURCES[1], SOURCES[0]],
        positions=[(x, y), (x + 512, y), (x, y + 512), (x + 512, y + 512)],
    )


def test_tiles_merged_score_like_the_whole_block(block: BuiltSlide) -> None:
    merger = TileMerger()
    with open_slide(block.path) as slide:
        tiles = plan_slide(
            slide, mpp=0.5, border=tile_margin(22.0), tile_size=400, mask=tissue_mask(slide)
        )
        for tile in tiles:
            merger.add_points(tile, detect_nuclei(tile.read(slide)))
        x, y = ORIGIN[0] - MARGIN, ORIGIN[1] - MARGIN
        whole = detect_nuclei(slide.read_region(x, y, 1024 + 2 * MARGIN, 1024 + 2 * MARGIN))
        whole += (x, y)
    merged = merger.centres()
    # The block is cut by seams every 252 px, in both directions.
    assert len({t.core[0] for t in tiles}) >= 5
    assert len({t.core[1] for t in tiles}) >= 5
    tiled_score = score_points(merged, block.centres, radius=8.0)
    whole_score = score_points(whole, block.centres, radius=8.0)
    assert whole_score.f1 > 0.7
    assert tiled_score.f1 == pytest.approx(whole_score.f1, abs=0.02)
    assert len(merged) == pytest.approx(len(whole), rel=0.03)
    # Kept twice: two centres closer than the detector ever puts two (1 of 508 today)...
    assert _close_pairs(merged) <= len(merged) // 100
    # ...which seam_duplicates finds, and nothing else.
    twins = seam_duplicates(merged, merger.tile_indices(), tiles, radius=4.0)
    assert twins.sum() == _close_pairs(merged)
    assert _close_pairs(merged[~twins]) == 0
    assert score_points(merged[~twins], block.centres, radius=8.0).f1 >= tiled_score.f1


def _close_pairs(points: npt.NDArray[np.float64]) -> int:
    gaps = np.hypot(*(points[:, None, :] - points[None, :, :]).transpose(2, 0, 1))
    np.fill_diagonal(gaps, np.inf)
    return int((gaps < 4.0).sum() // 2)
