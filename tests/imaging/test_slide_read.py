"""read_region: the pixels of the source, at level 0 and at other resolutions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import openslide
import pytest
from PIL import Image

from primaa.imaging.slides import open_slide
from primaa.imaging.slides.base import composite_on_white
from tests.imaging.conftest import SOURCES, SVS
from tests.support.slides import GLASS, BuiltSlide, Placement


def _source(placement: Placement) -> npt.NDArray[np.int16]:
    with Image.open(placement.source) as image:
        return np.asarray(image.convert("RGB"), np.int16)


def _box(pixels: npt.NDArray[np.int16], factor: int) -> npt.NDArray[np.float64]:
    """Mean of each factor x factor block: the reference for a downsample."""
    h, w = (pixels.shape[0] // factor) * factor, (pixels.shape[1] // factor) * factor
    blocks = pixels[:h, :w].reshape(h // factor, factor, w // factor, factor, 3)
    result: npt.NDArray[np.float64] = blocks.mean(axis=(1, 3))
    return result


def _error(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).mean())


def test_level0_is_the_source_exactly(lossless: BuiltSlide) -> None:
    place = lossless.placements[0]
    with open_slide(lossless.path) as slide:
        region = slide.read_region(place.x + 10, place.y + 20, 300, 200)
    assert region.dtype == np.uint8
    assert region.shape == (200, 300, 3)
    assert np.array_equal(region, _source(place)[20:220, 10:310])


def test_level0_of_a_jpeg_pyramid_is_the_source_within_compression(pyramid: BuiltSlide) -> None:
    place = pyramid.placements[1]
    with open_slide(pyramid.path) as slide:
        region = slide.read_region(place.x, place.y, place.width, place.height)
    assert _error(region, _source(place)) < 3.0


@pytest.mark.parametrize(("mpp", "factor"), [(1.0, 2), (2.0, 4), (1.5, 3), (3.0, 6)])
def test_reads_at_a_resolution_match_the_shrunken_source(
    lossless: BuiltSlide, mpp: float, factor: int
) -> None:
    """Exact levels (1 and 2 µm/px) and resampled ones (1.5, 3) against a box filter.

    A resampled read averages the coarsest level finer than asked (level 1 for 3
    level-0 pixels per output pixel), whose pixels straddle the output's: a
    little less exact than a box filter of level 0, never shifted.
    """
    place = lossless.placements[2]
    size = place.width // factor
    with open_slide(lossless.path) as slide:
        region = slide.read_region(place.x, place.y, size, size, mpp=mpp)
    assert region.shape == (size, size, 3)
    expected = _box(_source(place), factor)
    assert _error(region, expected) < (0.5 if mpp in (1.0, 2.0) else 3.5)
    # The reference is sharp enough to tell a shift of one output pixel.
    assert _error(region[:, 1:], expected[:, :-1]) > 2 * _error(region, expected)


@pytest.mark.parametrize(("factor", "offset"), [(3.0, 0.0), (2.5, 0.0), (2.5, 0.5), (1.5, 7.5)])
def test_resampling_is_the_exact_area_average(tmp_path: Path, factor: float, offset: float) -> None:
    """Fractional sizes and positions weigh partly covered pixels by the area covered."""
    source = _source(Placement(SOURCES[0], 0, 0, 512, 512))
    path = tmp_path / "flat.png"
    Image.fromarray(source.astype(np.uint8)).save(path)
    # Each source pixel split in 2 x 2: half pixels are whole ones of the fine image.
    fine = source.repeat(2, axis=0).repeat(2, axis=1)
    step, shift = round(factor * 2), round(offset * 2)
    expected = _box(fine[shift:, shift:], step)[:100, :100]
    with open_slide(path) as slide:
        region = slide.read_region(offset, offset, 100, 100, downsample=factor)
    assert np.abs(region.astype(np.float64) - expected).max() <= 0.5 + 1e-9


def test_reads_finer_than_level0_interpolate(tmp_path: Path) -> None:
    ramp = np.tile((np.arange(100) * 2).astype(np.uint8)[None, :, None], (20, 1, 3))
    path = tmp_path / "ramp.png"
    Image.fromarray(ramp).save(path)
    with open_slide(path) as slide:
        region = slide.read_region(10, 5, 60, 10, downsample=0.5)
    # Output pixel j samples source column 10 + (j + 0.5) / 2 - 0.5 (pixel centres).
    expected = 2 * (9.75 + 0.5 * np.arange(60))
    assert np.abs(region[:, :, 0].astype(np.float64) - expected).max() <= 1.0


def test_a_read_by_level_equals_the_same_read_by_downsample(pyramid: BuiltSlide) -> None:
    place = pyramid.placements[3]
    with open_slide(pyramid.path) as slide:
        by_level = slide.read_region(place.x, place.y, 128, 128, level=2)
        by_factor = slide.read_region(place.x, place.y, 128, 128, downsample=4.0)
        by_mpp = slide.read_region(place.x, place.y, 128, 128, mpp=2.0)
    assert np.array_equal(by_level, by_factor)
    assert np.array_equal(by_level, by_mpp)


def test_outside_the_slide_is_white_and_glass_is_glass(pyramid: BuiltSlide) -> None:
    with open_slide(pyramid.path) as slide:
        corner = slide.read_region(4096 - 40, 3072 - 40, 80, 80)
        below = slide.read_region(0, 3072 * 2, 50, 50, mpp=3.0)
    assert (corner[40:, :] == 255).all()
    assert (corner[:, 40:] == 255).all()
    assert _error(corner[:40, :40], np.broadcast_to(GLASS, (40, 40, 3))) < 4.0
    assert (below == 255).all()


def test_a_large_downsample_of_the_svs_is_read_in_blocks() -> None:
    """The single-level SVS at 8 µm/px: 139x186 pixels averaged from level 0, block by block."""
    with open_slide(SVS) as slide:
        factor = 16.0
        small = slide.read_region(0, 0, 139, 186, downsample=factor)
    with openslide.OpenSlide(SVS) as reference:
        full = np.asarray(reference.read_region((0, 0), 0, (2224, 2976)))[..., :3]
    expected = _box(full.astype(np.int16), 16)
    assert small.shape == (186, 139, 3)
    assert _error(small, expected) < 2.0


def test_the_svs_level0_is_what_openslide_reads() -> None:
    with open_slide(SVS) as slide, openslide.OpenSlide(SVS) as reference:
        ours = slide.read_region(1000, 1500, 256, 256)
        theirs = np.asarray(reference.read_region((1000, 1500), 0, (256, 256)))[..., :3]
    assert np.array_equal(ours, theirs)


def test_transparent_pixels_are_composited_on_white() -> None:
    rgba = np.array([[[0, 0, 0, 0], [100, 50, 0, 255], [100, 50, 0, 128]]], np.uint8)
    assert composite_on_white(rgba).tolist() == [[[255, 255, 255], [100, 50, 0], [177, 152, 127]]]


def test_a_region_starting_before_the_slide_is_white_there(lossless: BuiltSlide) -> None:
    with open_slide(lossless.path) as slide:
        region = slide.read_region(-10, -20, 30, 40)
        shrunk = slide.read_region(-16, -16, 8, 8, downsample=4.0)
    assert (region[:20] == 255).all()
    assert (region[:, :10] == 255).all()
    assert _error(region[20:, 10:], np.broadcast_to(GLASS, (20, 20, 3))) < 4.0
    assert (shrunk[:4, :4] == 255).all()
    assert _error(shrunk[4:, 4:], np.broadcast_to(GLASS, (4, 4, 3))) < 4.0
