"""roi_detection on synthetic bright-field images whose tissue regions are known."""

from __future__ import annotations

import math
from typing import Any

import marshmallow
import numpy as np
import numpy.typing as npt
import pytest
from shapely.geometry import MultiPolygon, Polygon, shape

from primaa.plugins.algorithm import AlgorithmResult, JobCancelled, RGBImage
from primaa.plugins.builtin.tissue import RoiDetection
from primaa.plugins.registry import load_registry

GLASS = (238, 236, 241)
TISSUE = (205, 125, 190)


def canvas(height: int, width: int, seed: int = 0) -> RGBImage:
    """Glass with a little sensor noise."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(0.0, 2.0, (height, width, 3))
    return np.clip(np.array(GLASS, np.float32) + noise, 0, 255).astype(np.uint8)


def paint(image: RGBImage, where: npt.NDArray[np.bool_], seed: int = 1) -> None:
    """Stained tissue: pink with texture and some dark purple nuclei-like dots."""
    rng = np.random.default_rng(seed)
    texture = rng.normal(0.0, 12.0, (int(where.sum()), 3))
    pixels = np.array(TISSUE, np.float32) + texture
    nuclei = rng.random(len(pixels)) < 0.05
    pixels[nuclei] = (90, 50, 140)
    image[where] = np.clip(pixels, 0, 255).astype(np.uint8)


def disk(height: int, width: int, cx: float, cy: float, radius: float) -> npt.NDArray[np.bool_]:
    yy, xx = np.ogrid[0:height, 0:width]
    inside: npt.NDArray[np.bool_] = (xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2 < radius**2
    return inside


def detect(image: RGBImage, **overrides: Any) -> AlgorithmResult:
    algorithm = RoiDetection()
    parameters = algorithm.Parameters().load(overrides)
    return algorithm.run(image, parameters, lambda fraction: None)


def regions(result: AlgorithmResult) -> MultiPolygon:
    assert result.geometry is not None
    assert result.geometry["type"] == "MultiPolygon"
    geometry = shape(result.geometry)
    assert isinstance(geometry, MultiPolygon)
    assert geometry.is_valid
    return geometry


def check_consistent(result: AlgorithmResult, height: int, width: int) -> None:
    """Measurements agree with the polygons; rings are closed and RFC 7946 oriented."""
    polygons = list(regions(result).geoms)
    assert result.object_type == "annotation"
    assert result.classification == "Tissue"
    assert result.object_measurements is not None
    assert len(result.object_measurements) == len(polygons)
    assert result.measurements["region_count"] == len(polygons)
    areas = [m["area_px"] for m in result.object_measurements]
    assert areas == pytest.approx([p.area for p in polygons])
    assert result.measurements["tissue_area_px"] == pytest.approx(sum(areas))
    assert result.measurements["tissue_fraction"] == pytest.approx(sum(areas) / (height * width))
    assert result.geometry is not None
    for rings in result.geometry["coordinates"]:
        for ring in rings:
            assert ring[0] == ring[-1]
            assert all(0.0 <= x <= width and 0.0 <= y <= height for x, y in ring)
    for polygon in polygons:
        assert polygon.exterior.is_ccw
        assert all(not interior.is_ccw for interior in polygon.interiors)


def test_registered_under_its_name() -> None:
    assert isinstance(load_registry().get("roi_detection"), RoiDetection)


def test_disk_on_glass_is_one_region_of_the_right_area() -> None:
    image = canvas(600, 800)
    paint(image, disk(600, 800, 420.0, 290.0, 180.0))

    result = detect(image)

    check_consistent(result, 600, 800)
    (polygon,) = regions(result).geoms
    assert polygon.area == pytest.approx(math.pi * 180.0**2, rel=0.02)
    assert polygon.centroid.x == pytest.approx(420.0, abs=2.0)
    assert polygon.centroid.y == pytest.approx(290.0, abs=2.0)
    assert not polygon.interiors


def test_annulus_is_one_polygon_with_one_hole() -> None:
    image = canvas(600, 600)
    paint(image, disk(600, 600, 300, 300, 220) & ~disk(600, 600, 300, 300, 90))

    result = detect(image)

    check_consistent(result, 600, 600)
    (polygon,) = regions(result).geoms
    assert len(polygon.interiors) == 1
    assert Polygon(polygon.interiors[0]).area == pytest.approx(math.pi * 90**2, rel=0.03)
    assert polygon.area == pytest.approx(math.pi * (220**2 - 90**2), rel=0.02)


def test_small_glass_holes_are_filled_and_large_ones_kept() -> None:
    image = canvas(600, 600)
    tissue = disk(600, 600, 300, 300, 250)
    tissue &= ~disk(600, 600, 200, 300, 20)  # about 1,250 px²: filled
    tissue &= ~disk(600, 600, 380, 300, 60)  # about 11,300 px²: kept
    paint(image, tissue)

    (polygon,) = regions(detect(image, min_hole_area=5000)).geoms

    assert len(polygon.interiors) == 1
    assert Polygon(polygon.interiors[0]).centroid.x == pytest.approx(380, abs=2)


def test_two_blobs_are_two_regions_and_specks_are_dropped() -> None:
    image = canvas(500, 900)
    paint(image, disk(500, 900, 200, 250, 120) | disk(500, 900, 650, 250, 150))
    paint(image, disk(500, 900, 450, 60, 15), seed=2)  # about 700 px²: debris

    result = detect(image, min_area=5000)

    check_consistent(result, 500, 900)
    areas = sorted(p.area for p in regions(result).geoms)
    assert areas == pytest.approx([math.pi * 120**2, math.pi * 150**2], rel=0.02)


def test_min_area_drops_regions_below_it() -> None:
    image = canvas(500, 900)
    paint(image, disk(500, 900, 200, 250, 40) | disk(500, 900, 650, 250, 150))

    kept = detect(image, min_area=1000)
    dropped = detect(image, min_area=10000)

    assert kept.measurements["region_count"] == 2
    assert dropped.measurements["region_count"] == 1


def test_all_glass_gives_no_tissue() -> None:
    result = detect(canvas(512, 512))

    assert result.geometry == {"type": "MultiPolygon", "coordinates": []}
    assert result.measurements == {
        "tissue_fraction": 0.0,
        "region_count": 0.0,
        "tissue_area_px": 0.0,
    }
    assert result.object_measurements == []


@pytest.mark.parametrize("glass", [(250, 250, 250), (232, 228, 205), (218, 218, 222)])
def test_tinted_or_dim_glass_is_still_glass(glass: tuple[int, int, int]) -> None:
    image = np.empty((400, 400, 3), np.uint8)
    image[:] = glass
    paint(image, disk(400, 400, 200, 200, 100))

    (polygon,) = regions(detect(image)).geoms

    assert polygon.area == pytest.approx(math.pi * 100**2, rel=0.03)


def test_black_padding_outside_the_scan_is_not_tissue() -> None:
    image = canvas(400, 600)
    image[:, 450:] = 0
    paint(image, disk(400, 600, 200, 200, 100))

    (polygon,) = regions(detect(image)).geoms

    assert polygon.area == pytest.approx(math.pi * 100**2, rel=0.03)


def test_all_tissue_is_one_region_covering_the_tile() -> None:
    image = canvas(512, 512)
    paint(image, np.ones((512, 512), bool))

    result = detect(image)

    check_consistent(result, 512, 512)
    assert result.measurements["region_count"] == 1
    assert result.measurements["tissue_fraction"] == pytest.approx(1.0, abs=0.01)


def test_pale_tissue_is_found_next_to_glass() -> None:
    image = canvas(400, 400)
    image[disk(400, 400, 200, 200, 120)] = (220, 190, 215)

    (polygon,) = regions(detect(image)).geoms

    assert polygon.area == pytest.approx(math.pi * 120**2, rel=0.03)


def test_sensitivity_decides_about_the_faintest_stain() -> None:
    image = canvas(400, 400)
    image[disk(400, 400, 200, 200, 120)] = (230, 212, 228)

    assert detect(image, sensitivity=0.0).measurements["region_count"] == 0
    assert detect(image, sensitivity=1.0).measurements["region_count"] == 1


def test_large_image_is_downsampled_but_answers_in_full_resolution_pixels() -> None:
    height, width = 3000, 6100
    image = np.empty((height, width, 3), np.uint8)
    image[:] = GLASS
    paint(image, disk(height, width, 4700.0, 1300.0, 900.0))

    result = detect(image, working_size=1024, simplify_tolerance=1.0)

    check_consistent(result, height, width)
    (polygon,) = regions(result).geoms
    assert polygon.area == pytest.approx(math.pi * 900.0**2, rel=0.02)
    assert polygon.centroid.x == pytest.approx(4700.0, abs=8.0)
    assert polygon.centroid.y == pytest.approx(1300.0, abs=8.0)
    min_x, min_y, max_x, max_y = polygon.bounds
    assert (min_x, min_y, max_x, max_y) == pytest.approx((3800, 400, 5600, 2200), abs=10)


def test_tissue_touching_the_border_is_clipped_to_the_image() -> None:
    image = canvas(300, 300)
    paint(image, disk(300, 300, 0, 0, 200))

    result = detect(image)

    check_consistent(result, 300, 300)
    (polygon,) = regions(result).geoms
    assert polygon.area == pytest.approx(math.pi * 200**2 / 4, rel=0.02)


def test_simplification_tolerance_trades_vertices_for_accuracy() -> None:
    image = canvas(600, 600)
    paint(image, disk(600, 600, 300, 300, 250))

    exact = regions(detect(image, simplify_tolerance=0)).geoms[0]
    coarse = regions(detect(image, simplify_tolerance=8)).geoms[0]

    assert len(coarse.exterior.coords) < len(exact.exterior.coords) / 3
    assert coarse.area == pytest.approx(exact.area, rel=0.03)
    assert coarse.hausdorff_distance(exact) <= 8.5


def interlocking_combs(size: int = 400) -> npt.NDArray[np.bool_]:
    """Two comb-shaped regions whose teeth interleave 6 px apart."""
    yy, xx = np.mgrid[0:size, 0:size]
    first = ((yy >= 20) & (yy < 40)) | ((yy >= 40) & (yy < 340) & (xx % 40 < 14))
    second = ((yy >= 360) & (yy < 380)) | (
        (yy >= 60) & (yy < 360) & (xx % 40 >= 20) & (xx % 40 < 34)
    )
    combs: npt.NDArray[np.bool_] = first | second
    return combs


def test_close_neighbours_stay_apart_and_valid() -> None:
    image = canvas(400, 400)
    paint(image, interlocking_combs())

    result = detect(image, min_area=100, simplify_tolerance=2)

    check_consistent(result, 400, 400)
    assert result.measurements["region_count"] == 2


@pytest.mark.parametrize("tolerance", [10.0, 40.0])
def test_coarse_simplification_never_yields_overlapping_regions(tolerance: float) -> None:
    image = canvas(400, 400)
    paint(image, interlocking_combs())

    result = detect(image, min_area=100, simplify_tolerance=tolerance)

    check_consistent(result, 400, 400)
    assert 1 <= result.measurements["region_count"] <= 2


def test_non_contiguous_input_is_accepted() -> None:
    image = canvas(400, 800)
    paint(image, disk(400, 800, 200, 200, 100))

    result = detect(image[:, ::2])

    assert result.measurements["region_count"] == 1


def test_progress_rises_to_the_end_and_cancellation_propagates() -> None:
    image = canvas(2000, 2000)
    paint(image, disk(2000, 2000, 1000, 1000, 600))
    algorithm = RoiDetection()
    parameters = algorithm.Parameters().load({"working_size": 512})
    seen: list[float] = []

    def record(fraction: float) -> None:
        seen.append(fraction)

    algorithm.run(image, parameters, record)

    assert seen == sorted(seen)
    assert all(0.0 <= f <= 1.0 for f in seen)
    assert len(seen) >= 3

    def cancel(fraction: float) -> None:
        raise JobCancelled

    with pytest.raises(JobCancelled):
        algorithm.run(image, parameters, cancel)


def test_parameters_have_defaults_and_descriptions() -> None:
    schema = RoiDetection.Parameters()

    loaded = schema.load({})

    assert set(loaded) >= {"min_area", "simplify_tolerance", "sensitivity", "working_size"}
    for name, field in schema.fields.items():
        assert field.metadata.get("description"), name


@pytest.mark.parametrize(
    "bad",
    [
        {"sensitivity": 1.5},
        {"sensitivity": -0.1},
        {"min_area": -1},
        {"min_hole_area": -1},
        {"simplify_tolerance": -0.5},
        {"working_size": 16},
        {"working_size": "big"},
        {"unknown": 1},
    ],
)
def test_parameters_out_of_range_are_rejected(bad: dict[str, Any]) -> None:
    with pytest.raises(marshmallow.ValidationError):
        RoiDetection.Parameters().load(bad)
