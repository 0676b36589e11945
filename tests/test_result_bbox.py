"""Result windows: the objects meeting a bbox, a bounded sample past the limit, a density."""

from __future__ import annotations

import pytest

from primaa.results.bbox import BadBbox, ResultIndex, parse_bbox


def _points(coordinates: list[list[float]]) -> dict[str, object]:
    return {
        "type": "Feature",
        "geometry": {"type": "MultiPoint", "coordinates": coordinates},
        "properties": {
            "job_id": "j",
            "object_measurements": [{"n": i} for i in range(len(coordinates))],
        },
    }


@pytest.mark.parametrize(
    "text", ["", "1,2,3", "1,2,3,4,5", "a,b,c,d", "0,0,nan,4", "0,0,inf,4", "0,0,1e999,4"]
)
def test_a_malformed_bbox_is_refused(text: str) -> None:
    with pytest.raises(BadBbox):
        parse_bbox(text)


def test_either_corner_may_come_first() -> None:
    assert parse_bbox("5,4,1,0") == (1.0, 0.0, 5.0, 4.0)
    assert parse_bbox("2,2,2,2") == (2.0, 2.0, 2.0, 2.0)


def test_a_bbox_is_four_numbers() -> None:
    assert parse_bbox("-2e3,1.5,0,4") == (
        -2000.0,
        1.5,
        0.0,
        4.0,
    )


def test_only_points_in_the_window_with_their_measurements() -> None:
    index = ResultIndex.of(_points([[1, 1], [10, 10], [20, 5], [10, 30]]))
    window = index.window((5, 0, 25, 15), limit=100)
    assert window["geometry"]["coordinates"] == [[10, 10], [20, 5]]
    assert window["properties"]["object_measurements"] == [{"n": 1}, {"n": 2}]
    view = window["properties"]["view"]
    assert view["objects_in_view"] == 2
    assert view["returned"] == 2
    assert view["objects_total"] == 4
    assert view["truncated"] is False
    assert view["density"] is None
    assert window["properties"]["job_id"] == "j"


def test_polygons_meeting_the_window_by_their_bounding_box() -> None:
    square = [[[0, 0], [4, 0], [4, 4], [0, 4], [0, 0]]]
    far = [[[100, 100], [104, 100], [104, 104], [100, 100]]]
    feature = {
        "type": "Feature",
        "geometry": {"type": "MultiPolygon", "coordinates": [square, far]},
        "properties": {},
    }
    window = ResultIndex.of(feature).window((3, 3, 50, 50), limit=10)
    assert window["geometry"] == {"type": "MultiPolygon", "coordinates": [square]}


def test_past_the_limit_an_even_sample_and_a_density_grid() -> None:
    coordinates = [[float(x), float(y)] for x in range(100) for y in range(100)]
    window = ResultIndex.of(_points(coordinates)).window((0, 0, 50, 100), limit=500)
    view = window["properties"]["view"]
    assert view["objects_in_view"] == 50 * 100 + 100  # x = 0..50 inclusive
    assert view["returned"] == len(window["geometry"]["coordinates"]) == 500
    assert view["truncated"] is True
    xs = [p[0] for p in window["geometry"]["coordinates"]]
    assert (min(xs), max(xs)) == (0, 50), "spread over the window, not its first objects"
    density = view["density"]
    assert sum(map(sum, density["counts"])) == view["objects_in_view"]
    assert len(density["counts"]) == density["rows"] == 32
    assert len(density["counts"][0]) == density["columns"] == 16


def test_a_result_without_objects() -> None:
    empty = {"type": "Feature", "geometry": None, "properties": {}}
    window = ResultIndex.of(empty).window((0, 0, 1, 1), limit=10)
    assert window["geometry"] is None
    assert window["properties"]["view"]["objects_total"] == 0
