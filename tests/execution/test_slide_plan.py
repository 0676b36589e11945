"""How a job runs on its image: one task, tiles, or the slide in one piece; and how tile
results merge (points, polygons with holes, what cannot merge)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, ClassVar

import pytest
from PIL import Image

from primaa.execution.slide_plan import plan_job
from primaa.execution.tile_results import TileResults
from primaa.imaging.slides import Tile, plan_tiles
from primaa.jobs.ports import TaskError
from primaa.plugins.algorithm import Algorithm, AlgorithmResult, Progress, RGBImage
from primaa.plugins.builtin.nuclei import PoiDetection
from primaa.plugins.builtin.tissue import RoiDetection
from tests.support.slides import build_slide

SVS = Path(__file__).resolve().parents[1] / "data" / "CMU-1-Small-Region.svs"


class Undeclared(Algorithm):
    name: ClassVar[str] = "undeclared"
    version: ClassVar[str] = "1"
    summary: ClassVar[str] = "declares no resolution"

    def run(self, image: RGBImage, parameters: Any, progress: Progress) -> AlgorithmResult:
        raise AssertionError("not run here")


def _png(path: Path, width: int, height: int) -> Path:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (236, 180, 210)).save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue())
    return path


def test_a_small_flat_image_is_one_task_as_always(tmp_path: Path) -> None:
    image = _png(tmp_path / "small.png", 2000, 1500)
    assert plan_job(image, PoiDetection(), max_pixels=10**8) is None
    assert plan_job(image, Undeclared(), max_pixels=10**8) is None


def test_a_flat_image_larger_than_a_tile_is_tiled_at_full_resolution(tmp_path: Path) -> None:
    image = _png(tmp_path / "large.png", 3000, 1000)
    plan = plan_job(image, PoiDetection(), max_pixels=10**8)
    assert plan is not None
    assert plan.downsample == 1.0
    assert plan.pixel_size_um is None, "a flat image states no resolution we trust"
    assert len(plan.tiles) == 2
    assert plan.tiles[0].x == 0
    assert plan.tiles[0].core_local[2] - plan.tiles[0].width == -48, "24 µm at 0.5 µm/px"
    assert plan_job(image, Undeclared(), max_pixels=10**8) is None, "declares nothing: whole"


def test_a_slide_for_an_undeclared_algorithm_is_read_whole_within_the_pixel_limit() -> None:
    plan = plan_job(SVS, Undeclared(), max_pixels=10**8)
    assert plan is not None
    assert plan.whole
    assert not plan.informed, "it is told nothing it did not ask for"
    assert plan.tiles[0].downsample == 1.0
    assert (plan.tiles[0].width, plan.tiles[0].height) == (2220, 2967)
    with pytest.raises(TaskError, match=r"declares no resolution \(mpp\).*above the limit of 1\.0"):
        plan_job(SVS, Undeclared(), max_pixels=1_000_000)


def test_roi_detection_reads_the_slide_in_one_piece_at_its_resolution() -> None:
    plan = plan_job(SVS, RoiDetection(), max_pixels=10**8)
    assert plan is not None
    assert plan.whole
    assert plan.informed
    assert plan.pixel_size_um == pytest.approx(8.0, rel=0.05)
    tile = plan.tiles[0]
    assert tile.width * tile.downsample >= 2220
    assert tile.height * tile.downsample >= 2967


def test_without_a_stated_resolution_tiles_are_level0_pixels(tmp_path: Path) -> None:
    built = build_slide(
        tmp_path / "no-mpp.tif",
        size=(3000, 2000),
        sources=[_png(tmp_path / "tissue.png", 2400, 1600)],
        positions=[(300, 200)],
        mpp=None,
    )
    plan = plan_job(built.path, PoiDetection(), max_pixels=10**8, tile_size=1024)
    assert plan is not None
    assert plan.downsample == 1.0
    assert plan.pixel_size_um is None
    x1 = plan.tiles[0].core_local[2]
    assert plan.tiles[0].width - x1 == 48, "border_um / mpp pixels"


def test_a_slide_without_tissue_has_no_tiles_and_merges_to_nothing(tmp_path: Path) -> None:
    glass = build_slide(tmp_path / "glass.tif", size=(3000, 2000), sources=[], positions=[])
    plan = plan_job(glass.path, PoiDetection(), max_pixels=10**8)
    assert plan is not None
    assert plan.tiles == ()
    merged = TileResults(plan.dimensions).result()
    assert merged.measurements["count"] == 0
    assert merged.measurements["tiles"] == 0


def _two_tiles() -> tuple[Tile, Tile]:
    first, second = plan_tiles((200, 100), downsample=2.0, border=5, tile_size=60)[:2]
    return first, second


def test_polygons_keep_their_holes_and_their_measurements_in_level0() -> None:
    first, second = _two_tiles()
    square = [[[10.0, 10.0], [30.0, 10.0], [30.0, 30.0], [10.0, 30.0], [10.0, 10.0]]]
    holed = [*square, [[15.0, 15.0], [20.0, 15.0], [20.0, 20.0], [15.0, 15.0]]]
    merged = TileResults((200, 100))
    merged.add(
        first,
        AlgorithmResult(
            geometry={"type": "MultiPolygon", "coordinates": [holed]},
            object_type="annotation",
            classification="Tissue",
            object_measurements=[{"area_px": 400.0}],
        ),
    )
    merged.add(second, AlgorithmResult(geometry={"type": "Polygon", "coordinates": square}))
    result = merged.result()
    assert result.geometry is not None
    polygons = result.geometry["coordinates"]
    assert len(polygons) == 2
    assert len(polygons[0]) == 2, "the hole is kept"
    assert polygons[0][0][0] == [20.5, 20.5], "(10 + 0.5) * 2 - 0.5"
    assert polygons[1][0][0][0] == pytest.approx((second.x + 10.5) * 2 - 0.5)
    assert result.object_type == "annotation"
    assert result.object_measurements == [{"area_px": 400.0}, {}]


def test_what_cannot_merge_fails_with_a_clear_error() -> None:
    first, second = _two_tiles()
    merged = TileResults((200, 100))
    with pytest.raises(TaskError, match="LineString geometry cannot be merged"):
        merged.add(first, AlgorithmResult(geometry={"type": "LineString", "coordinates": [[0, 0]]}))
    merged.add(first, AlgorithmResult(geometry={"type": "MultiPoint", "coordinates": [[5, 5]]}))
    square = [[[1.0, 1.0], [3.0, 1.0], [3.0, 3.0], [1.0, 1.0]]]
    with pytest.raises(TaskError, match="both points and regions"):
        merged.add(second, AlgorithmResult(geometry={"type": "Polygon", "coordinates": square}))


def _points_on_both_sides(offsets: tuple[float, float]) -> int:
    """Both tiles report points at ``offsets`` from the first core's right edge (given in
    the first tile's pixels); how many the merge keeps."""
    first, second = _two_tiles()
    seam = first.core_local[2]
    shift = second.x - first.x
    merged = TileResults((200, 100))
    for tile, origin in ((first, 0), (second, shift)):
        coordinates = [[seam + offset - origin, 10.0] for offset in offsets]
        merged.add(
            tile, AlgorithmResult(geometry={"type": "MultiPoint", "coordinates": coordinates})
        )
    return int(merged.result().measurements["count"])


def test_points_seen_by_two_tiles_are_kept_by_the_one_whose_core_holds_them() -> None:
    assert _points_on_both_sides((-4.0, 3.0)) == 2


def test_one_object_whose_centre_moved_across_the_seam_is_kept_once() -> None:
    first, second = _two_tiles()
    seam = first.core_local[2]
    shift = second.x - first.x
    merged = TileResults((200, 100))
    # The first tile sees it just left of the seam, the second just right: both keep it.
    merged.add(
        first, AlgorithmResult(geometry={"type": "MultiPoint", "coordinates": [[seam - 1.0, 10.0]]})
    )
    merged.add(
        second,
        AlgorithmResult(
            geometry={"type": "MultiPoint", "coordinates": [[seam - shift + 0.5, 10.0]]}
        ),
    )
    assert merged.result().measurements["count"] == 1


def test_a_slide_of_few_tiles_is_cut_finer_so_every_worker_gets_several(tmp_path: Path) -> None:
    built = build_slide(
        tmp_path / "small.tif",
        size=(3000, 3000),
        sources=[_png(tmp_path / "tissue.png", 3000, 3000)],
        positions=[(0, 0)],
        mpp=0.5,
    )
    one = plan_job(built.path, PoiDetection(), max_pixels=10**8, workers=1)
    two = plan_job(built.path, PoiDetection(), max_pixels=10**8, workers=2)
    many = plan_job(built.path, PoiDetection(), max_pixels=10**8, workers=8)
    assert one is not None
    assert two is not None
    assert many is not None
    assert len(one.tiles) == 4, "one worker: tiles of 2048 px, as configured"
    assert len(two.tiles) == 16, "at least 4 tiles per worker: tiles of 1024 px"
    assert max(tile.width for tile in two.tiles) <= 1024
    assert len(many.tiles) == 16, "never below 1024 px, however many workers"
