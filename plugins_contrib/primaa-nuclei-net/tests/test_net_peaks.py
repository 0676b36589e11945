"""Centres from a heat map, and network pixels back to image pixels."""

from __future__ import annotations

import numpy as np
import pytest
from primaa_nuclei_net.peaks import find_peaks
from primaa_nuclei_net.scale import to_image, to_network


def _blobs(shape: tuple[int, int], centres: list[tuple[float, float]]) -> np.ndarray:
    rows, columns = np.mgrid[: shape[0], : shape[1]]
    heat = np.zeros(shape, dtype=np.float32)
    for x, y in centres:
        heat = np.maximum(heat, np.exp(-((columns - x) ** 2 + (rows - y) ** 2) / 4.5))
    return heat.astype(np.float32)


def test_peaks_are_x_y_and_refined_below_a_pixel() -> None:
    centres = [(10.3, 40.0), (50.0, 12.6), (70.5, 70.5)]
    found = find_peaks(_blobs((90, 100), centres), threshold=0.5)
    found = found[np.argsort(found[:, 0])]
    assert found == pytest.approx(np.array(centres), abs=0.05)


def test_threshold_and_minimum_distance_drop_weak_and_close_peaks() -> None:
    heat = _blobs((60, 60), [(20.0, 20.0), (40.0, 40.0)])
    heat[40, 40] = 0.3  # a weak peak: under the threshold
    assert len(find_peaks(heat * np.float32(0.9), threshold=0.5)) == 2
    assert len(find_peaks(_blobs((60, 60), [(20.0, 20.0)]) * 0.4, threshold=0.5)) == 0
    close = np.maximum(_blobs((40, 40), [(18.0, 20.0)]), 0.9 * _blobs((40, 40), [(21.0, 20.0)]))
    assert len(find_peaks(close, threshold=0.5, min_distance=3)) == 1
    assert len(find_peaks(np.zeros((0, 0), np.float32), threshold=0.5)) == 0


def test_network_scale_halves_a_40x_image_and_maps_points_back() -> None:
    image = np.zeros((1000, 600, 3), dtype=np.uint8)
    small, row_scale, column_scale = to_network(image, 0.25)
    assert small.shape == (500, 300, 3)
    assert (row_scale, column_scale) == (0.5, 0.5)
    # Pixel centres line up: network pixel 0 covers image pixels 0 and 1 (centre 0.5).
    back = to_image(np.array([[0.0, 0.0], [10.0, 20.0]]), row_scale, column_scale)
    assert back == pytest.approx(np.array([[0.5, 0.5], [20.5, 40.5]]))
    same, *_ = to_network(image, 0.5)
    assert same is image


def test_a_whole_factor_averages_boxes_and_another_resamples() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (64, 48, 3), dtype=np.uint8)
    small, *_ = to_network(image, 0.25)
    boxes = image.reshape(32, 2, 24, 2, 3).astype(np.float64).mean(axis=(1, 3))
    assert np.abs(small.astype(np.float64) - boxes).max() <= 0.5
    # 63 rows do not halve: bilinear resampling to the nearest size.
    odd, row_scale, _ = to_network(image[:63], 0.25)
    assert odd.shape == (32, 24, 3)
    assert row_scale == 32 / 63


def test_maximum_filter_is_scipys_with_edges_repeated() -> None:
    from primaa_nuclei_net.peaks import _maximum_filter
    from scipy import ndimage

    heat = np.random.default_rng(3).random((37, 23)).astype(np.float32)
    for radius in (1, 2, 3):
        expected = ndimage.maximum_filter(heat, size=2 * radius + 1, mode="nearest")
        assert np.array_equal(_maximum_filter(heat, radius), expected)


def test_a_plateau_keeps_one_point_at_its_centre_and_edges_are_repeated() -> None:
    heat = np.zeros((20, 30), dtype=np.float32)
    heat[5, 10:13] = 0.9  # three equal maxima side by side: one nucleus
    heat[19, 29] = 0.8  # a corner peak: its missing neighbours repeat it, a flat top
    found = find_peaks(heat, threshold=0.5)
    found = found[np.argsort(found[:, 0])]
    # Outward, the parabola's vertex lies half way to the repeated edge value.
    assert found == pytest.approx(np.array([[11.0, 5.0], [29.5, 19.5]]))
