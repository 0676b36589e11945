"""tissue_mask: finds the H&E tiles on a built slide and the tissue of a real one, not glass."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from primaa.imaging.slides import TissueMask, open_slide, tissue_mask, tissue_pixels
from tests.imaging.conftest import SVS
from tests.support.slides import GLASS, BuiltSlide


def test_the_mask_holds_the_tiles_and_not_the_glass(pyramid: BuiltSlide) -> None:
    with open_slide(pyramid.path) as slide:
        found = tissue_mask(slide)
    # 8 µm/px on a 0.5 µm/px slide is level 4, read as it is.
    assert found.downsample == 16.0
    assert found.mask.shape == (3072 // 16, 4096 // 16)
    expected = np.zeros_like(found.mask)
    for place in pyramid.placements:
        assert found.any_in(place.x, place.y, place.x + place.width, place.y + place.height)
        i0, j0 = place.y // 16, place.x // 16
        # The tile's inside is tissue (the H&E crops are tissue edge to edge)...
        assert found.mask[i0 + 2 : i0 + 30, j0 + 2 : j0 + 30].mean() > 0.9
        expected[i0 - 2 : i0 + 34, j0 - 2 : j0 + 34] = True
    # ...and nothing more than a margin around the tiles is.
    assert not found.mask[~expected].any()
    assert found.fraction == pytest.approx(6 * 32 * 32 / (192 * 256), rel=0.2)


def test_the_real_svs_has_tissue_and_glass() -> None:
    with open_slide(SVS) as slide:
        found = tissue_mask(slide)
    # A single level: read at 8 µm/px (16 level-0 pixels), block by block.
    assert found.downsample == pytest.approx(8.0 / 0.499)
    assert found.mask.shape == (186, 139)
    assert 0.25 < found.fraction < 0.6
    # The left edge of this section is glass, its lower middle dense tissue.
    assert found.mask[:, :10].mean() < 0.1
    assert found.mask[120:180, 40:100].mean() > 0.8


def test_a_slide_without_resolution_is_masked_at_a_bounded_size(no_mpp: BuiltSlide) -> None:
    with open_slide(no_mpp.path) as slide:
        found = tissue_mask(slide)
    assert found.downsample == 2.0
    assert found.mask.shape == (1536, 2048)
    assert found.fraction == pytest.approx(6 * 512 * 512 / (4096 * 3072), rel=0.2)


def test_pure_glass_and_black_padding_are_not_tissue() -> None:
    rng = np.random.default_rng(0)
    glass = np.clip(np.array(GLASS) + rng.normal(0, 3, (200, 200, 3)), 0, 255).astype(np.uint8)
    glass[:, :40] = 0
    assert not tissue_pixels(glass).any()


def test_pale_tissue_is_found_on_glass() -> None:
    image = np.empty((100, 100, 3), np.uint8)
    image[...] = GLASS
    image[30:70, 30:70] = (225, 200, 220)
    mask = tissue_pixels(image, margin=0)
    assert mask[32:68, 32:68].all()
    assert mask.sum() == pytest.approx(40 * 40, rel=0.05)


def test_a_flat_image_is_masked_too(tmp_path: Path) -> None:
    image = np.empty((300, 400, 3), np.uint8)
    image[...] = GLASS
    image[100:200, 150:250] = (150, 60, 160)
    path = tmp_path / "flat.png"
    Image.fromarray(image).save(path)
    with open_slide(path) as slide:
        found = tissue_mask(slide)
    assert found.downsample == 1.0
    assert found.any_in(150, 100, 160, 110)
    assert not found.any_in(0, 0, 140, 90)


def test_any_in_rounds_outwards() -> None:
    mask = np.zeros((10, 10), bool)
    mask[5, 5] = True
    found = TissueMask(mask, 4.0)
    assert found.any_in(23.9, 23.9, 24.1, 24.1)
    assert not found.any_in(0, 0, 20, 20)
    assert found.any_in(0, 0, 20.5, 20.5)
