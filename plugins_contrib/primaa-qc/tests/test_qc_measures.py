"""The individual measures, on images whose answer is known by construction."""

from __future__ import annotations

import numpy as np
import primaa_qc.measures as measures
import pytest
from qc_synthetic import GLASS, PINK, PURPLE, blurred, flat, nuclei_texture


def test_colour_deconvolution_separates_nuclei_from_stroma() -> None:
    nucleus = measures.stain_amounts(flat(PURPLE)).mean(axis=0)
    stroma = measures.stain_amounts(flat(PINK)).mean(axis=0)
    assert nucleus[0] > nucleus[1], "purple is mostly haematoxylin"
    assert stroma[1] > stroma[0], "pink is mostly eosin"
    assert nucleus[0] > 5 * stroma[0]


def test_stain_vectors_are_recovered_exactly() -> None:
    """A pixel made of 0.5 OD of haematoxylin and 0.2 of eosin unmixes to those amounts."""
    haematoxylin = np.array([0.644211, 0.716556, 0.266844])
    eosin = np.array([0.092789, 0.954111, 0.283111])
    od = 0.5 * haematoxylin / np.linalg.norm(haematoxylin) + 0.2 * eosin / np.linalg.norm(eosin)
    amounts = od.astype(np.float32) @ measures.RGB_TO_HE
    np.testing.assert_allclose(amounts[:2], [0.5, 0.2], atol=1e-5)
    assert abs(amounts[2]) < 1e-5


def test_glass_is_not_tissue_and_stain_is() -> None:
    assert not measures.tissue_mask(flat(GLASS), 0.15).any()
    assert measures.tissue_mask(flat(PINK), 0.15).all()
    assert measures.tissue_mask(nuclei_texture(), 0.15).all()


@pytest.mark.parametrize(
    ("colour", "pen", "dark"),
    [
        ((30, 150, 60), True, False),  # green marker
        ((40, 170, 190), True, False),  # cyan marker
        ((20, 20, 25), False, True),  # black marker, fold
        (PURPLE, False, False),
        (PINK, False, False),
        (GLASS, False, False),
    ],
)
def test_ink_and_dark_pixels(colour: tuple[int, int, int], pen: bool, dark: bool) -> None:
    pen_mask, dark_mask = measures.artefact_masks(flat(colour, 2, 2))
    assert bool(pen_mask.all()) is pen
    assert bool(dark_mask.all()) is dark


def test_blur_lowers_both_focus_scores_monotonically() -> None:
    image = nuclei_texture()
    scores = [
        measures.focus(measures.grey(image if sigma == 0 else blurred(image, sigma)))
        for sigma in (0, 1, 2, 4)
    ]
    laplacian = [s.laplacian_variance for s in scores]
    energy = [s.gradient_energy for s in scores]
    assert laplacian == sorted(laplacian, reverse=True)
    assert energy == sorted(energy, reverse=True)
    assert laplacian[0] > 20 * laplacian[2]


def test_gradient_energy_ignores_contrast_but_laplacian_does_not() -> None:
    grey = measures.grey(nuclei_texture())
    faint = 200 + 0.25 * (grey - 200)
    assert measures.focus(faint).gradient_energy == pytest.approx(
        measures.focus(grey).gradient_energy, rel=1e-3
    )
    assert measures.focus(faint).laplacian_variance < measures.focus(grey).laplacian_variance / 10


def test_flat_image_has_zero_focus_rather_than_nan() -> None:
    assert measures.focus(measures.grey(flat(GLASS))) == measures.Focus(0.0, 0.0)


def test_downsample_fits_the_working_size_and_keeps_means() -> None:
    image = nuclei_texture(1000)
    small, factor = measures.downsample(image, 300)
    assert factor == 4
    assert small.shape == (250, 250, 3)
    assert small.dtype == np.uint8
    np.testing.assert_allclose(small.mean(axis=(0, 1)), image.mean(axis=(0, 1)), atol=0.5)
    same, one = measures.downsample(image, 1000)
    assert one == 1
    assert same is image


def test_focus_tiles_prefer_tissue_over_glass() -> None:
    mask = np.zeros((100, 100), dtype=bool)
    mask[50:, 50:] = True  # tissue only in the bottom-right quarter
    corners = measures.focus_tiles((1000, 1000, 3), 250, mask, 10, 4)
    assert corners == [(500, 500), (500, 750), (750, 500), (750, 750)]


def test_focus_tiles_reach_the_far_edges_of_odd_sizes() -> None:
    mask = np.ones((700, 1200), dtype=bool)
    corners = measures.focus_tiles((700, 1200, 3), 512, mask, 1, 100)
    assert sorted(corners) == [(0, 0), (0, 512), (0, 688), (188, 0), (188, 512), (188, 688)]
    assert measures.focus_tiles((300, 200, 3), 512, mask, 1, 100) == [(0, 0)]


def test_colour_stats_in_strips_equal_one_pass() -> None:
    image = nuclei_texture(300)
    image[:40] = GLASS
    whole = measures.ColourStats(0.15)
    whole.add(image)
    strips = measures.ColourStats(0.15)
    for top in range(0, 300, 64):
        strips.add(image[top : top + 64])
    assert strips.measurements() == pytest.approx(whole.measurements())
    assert whole.measurements()["tissue_fraction"] == pytest.approx(260 / 300)
