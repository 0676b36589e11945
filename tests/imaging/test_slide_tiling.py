"""plan_tiles: cores partition the plane, tiles cover all tissue, reads stay bounded."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from primaa.imaging.slides import Tile, TissueMask, open_slide, plan_slide, plan_tiles, tissue_mask
from tests.imaging.conftest import SVS
from tests.support.slides import BuiltSlide


def _coverage(tiles: tuple[Tile, ...], width: int, height: int) -> npt.NDArray[np.int64]:
    """How many cores hold each working pixel."""
    count = np.zeros((height, width), np.int64)
    for tile in tiles:
        x0, y0, x1, y1 = tile.core
        count[y0:y1, x0:x1] += 1
    return count


def _random_layout(rng: np.random.Generator) -> tuple[tuple[int, int], float, int, int]:
    size = (int(rng.integers(1, 3000)), int(rng.integers(1, 3000)))
    downsample = float(rng.choice([1.0, 1.002, 2.0, 0.5, 3.7]))
    tile_size = int(rng.integers(64, 700))
    border = int(rng.integers(0, tile_size // 3))
    return size, downsample, border, tile_size


@pytest.mark.parametrize("seed", range(40))
def test_cores_partition_the_plane_and_reads_stay_in_bounds(seed: int) -> None:
    rng = np.random.default_rng(seed)
    size, downsample, border, tile_size = _random_layout(rng)
    tiles = plan_tiles(size, downsample=downsample, border=border, tile_size=tile_size)
    width, height = math.ceil(size[0] / downsample), math.ceil(size[1] / downsample)
    assert (_coverage(tiles, width, height) == 1).all()
    for index, tile in enumerate(tiles):
        assert tile.index == index
        assert max(tile.width, tile.height) <= tile_size
        x0, y0, x1, y1 = tile.core
        # The read is the core grown by the border, clipped to the slide.
        assert (tile.x, tile.y) == (max(0, x0 - border), max(0, y0 - border))
        assert tile.x + tile.width == min(width, x1 + border)
        assert tile.y + tile.height == min(height, y1 + border)


@pytest.mark.parametrize("seed", range(40))
def test_tiles_cover_every_tissue_pixel_and_skip_glass(seed: int) -> None:
    rng = np.random.default_rng(seed)
    size, downsample, border, tile_size = _random_layout(rng)
    mask_scale = float(rng.choice([4.0, 16.0, 7.3]))
    shape = (math.ceil(size[1] / mask_scale), math.ceil(size[0] / mask_scale))
    mask = rng.random(shape) < rng.choice([0.0, 0.002, 0.05, 0.5])
    tissue = TissueMask(mask, mask_scale)
    tiles = plan_tiles(size, downsample=downsample, border=border, tile_size=tile_size, mask=tissue)
    every = plan_tiles(size, downsample=downsample, border=border, tile_size=tile_size)
    kept = {tile.core for tile in tiles}
    for tile in every:
        x0, y0, x1, y1 = (v * downsample for v in tile.core)
        assert (tile.core in kept) == tissue.any_in(x0, y0, x1, y1)
    # Every tissue pixel's centre, in working pixels, lies in exactly one kept core.
    rows, cols = np.nonzero(mask)
    centres = np.stack([(cols + 0.5) * mask_scale, (rows + 0.5) * mask_scale], 1) / downsample
    u, v = centres[:, 0], centres[:, 1]
    on_slide = (u < math.ceil(size[0] / downsample)) & (v < math.ceil(size[1] / downsample))
    holders = np.zeros(len(centres), np.int64)
    for tile in tiles:
        x0, y0, x1, y1 = tile.core
        holders += (u >= x0) & (u < x1) & (v >= y0) & (v < y1)
    assert (holders[on_slide] == 1).all()


def test_cores_are_near_equal_so_no_thin_tile_is_left() -> None:
    tiles = plan_tiles((4100, 1000), downsample=1.0, border=32, tile_size=1088)
    widths = {t.core[2] - t.core[0] for t in tiles}
    assert widths == {820}
    assert len(tiles) == 5


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="core must be at least"):
        plan_tiles((1000, 1000), downsample=1.0, border=400, tile_size=1000)
    with pytest.raises(ValueError, match="positive"):
        plan_tiles((1000, 1000), downsample=0.0)
    with pytest.raises(ValueError, match="negative"):
        plan_tiles((1000, 1000), downsample=1.0, border=-1)


def test_tiles_are_small_frozen_values() -> None:
    (tile,) = plan_tiles((500, 400), downsample=2.0, border=8, tile_size=512)
    assert len(pickle.dumps(tile)) < 150
    assert pickle.loads(pickle.dumps(tile)) == tile
    with pytest.raises(AttributeError):
        tile.x = 3  # type: ignore[misc]
    assert tile.level0_region == (0.0, 0.0, 500.0, 400.0)
    assert tile.core_local == (0, 0, 250, 200)


def test_a_slide_is_planned_at_the_algorithm_resolution(pyramid: BuiltSlide) -> None:
    with open_slide(pyramid.path) as slide:
        found = tissue_mask(slide)
        tiles = plan_slide(slide, mpp=1.0, border_um=16, tile_size=512, mask=found)
        every = plan_slide(slide, mpp=1.0, border_um=16, tile_size=512)
        pixels = tiles[0].read(slide)
    assert all(t.downsample == 2.0 for t in tiles)
    # 16 µm at 1 µm/px is 16 working pixels of context on each side of a core.
    assert max(t.core[2] - t.core[0] for t in tiles) <= 512 - 32
    assert 6 <= len(tiles) < len(every)
    assert pixels.shape == (tiles[0].height, tiles[0].width, 3)
    # Every placed H&E tile is covered by cores, at the working resolution.
    covered = _coverage(tiles, 2048, 1536)
    for place in pyramid.placements:
        x, y = place.x // 2, place.y // 2
        assert covered[y : y + 256, x : x + 256].all()


def test_without_mpp_the_pixel_scale_is_the_fallback(no_mpp: BuiltSlide) -> None:
    with open_slide(no_mpp.path) as slide:
        tiles = plan_slide(slide, mpp=0.25, downsample=4.0, border=10, border_um=3.0, tile_size=512)
    assert {t.downsample for t in tiles} == {4.0}
    # The first tile's core gets its context on the right only (the slide starts at 0).
    assert tiles[0].width - (tiles[0].core[2] - tiles[0].core[0]) == 10


def test_a_level_close_to_the_asked_resolution_is_read_as_it_is() -> None:
    with open_slide(SVS) as slide:
        snapped = plan_slide(slide, mpp=0.5, border_um=10.0)
        exact = plan_slide(slide, mpp=0.5, border_um=10.0, snap=0.0)
        coarser = plan_slide(slide, mpp=0.52, border_um=10.0)
    assert {t.downsample for t in snapped} == {1.0}
    assert [t.downsample for t in exact] == pytest.approx([0.5 / 0.499] * len(exact))
    assert [t.downsample for t in coarser] == pytest.approx([0.52 / 0.499] * len(coarser))
    # 10 µm of context at 0.499 µm/px: 21 working pixels.
    assert snapped[0].width - (snapped[0].core[2] - snapped[0].core[0]) == 21


def test_a_large_flat_image_is_tiled_too(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (1000, 1500, 3), dtype=np.uint8)
    path = tmp_path / "flat.png"
    Image.fromarray(pixels).save(path)
    with open_slide(path) as slide:
        tiles = plan_slide(slide, mpp=0.5, downsample=1.0, border=16, tile_size=512)
        reads = [tile.read(slide) for tile in tiles]
    assert len(tiles) == 4 * 3  # cores of at most 512 - 2 * 16 = 480 px
    for tile, read in zip(tiles, reads, strict=True):
        assert np.array_equal(
            read, pixels[tile.y : tile.y + tile.height, tile.x : tile.x + tile.width]
        )
