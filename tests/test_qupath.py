"""The QuPath export: the structure QuPath's GeoJSON import reads, one object per part."""

from __future__ import annotations

import json
import math
import uuid
from typing import Any

import pytest
from shapely.geometry import shape

from primaa.plugins.algorithm import AlgorithmResult
from primaa.results.qupath import classification_color, feature_to_qupath, to_qupath

SQUARE_WITH_HOLE = [
    [[0.0, 0.0], [10.0, 0.0], [10.0, 10.0], [0.0, 10.0], [0.0, 0.0]],
    [[3.0, 3.0], [3.0, 6.0], [6.0, 6.0], [6.0, 3.0], [3.0, 3.0]],
]
SMALL_SQUARE = [[[20.0, 20.0], [25.0, 20.0], [25.0, 25.0], [20.0, 25.0], [20.0, 20.0]]]


def stored_feature(**properties: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "job_id": "job-1",
        "algorithm_name": "poi_detection",
        "image_url": "http://example.test/a.png",
        "status": "Completed",
        "measurements": {"count": 3.0},
        "object_type": "detection",
        "classification": "Nucleus",
        "object_measurements": None,
    }
    base.update(properties)
    geometry = base.pop("geometry", {"type": "MultiPoint", "coordinates": [[1, 2], [3, 4], [5, 6]]})
    return {"type": "Feature", "geometry": geometry, "properties": base}


def test_multipoint_gives_one_point_detection_per_point() -> None:
    collection = feature_to_qupath(stored_feature())

    assert collection["type"] == "FeatureCollection"
    features = collection["features"]
    assert [f["geometry"] for f in features] == [
        {"type": "Point", "coordinates": [1, 2]},
        {"type": "Point", "coordinates": [3, 4]},
        {"type": "Point", "coordinates": [5, 6]},
    ]
    for feature in features:
        assert feature["type"] == "Feature"
        assert feature["properties"]["objectType"] == "detection"
        assert "isLocked" not in feature["properties"]
        assert feature["properties"]["classification"] == {
            "name": "Nucleus",
            "color": classification_color("Nucleus"),
        }


def test_ids_are_uuids_unique_and_stable_per_job() -> None:
    first = feature_to_qupath(stored_feature())
    second = feature_to_qupath(stored_feature())
    other_job = feature_to_qupath(stored_feature(job_id="job-2"))

    ids = [f["id"] for f in first["features"]]
    assert all(str(uuid.UUID(i)) == i for i in ids)
    assert len(set(ids)) == len(ids)
    assert ids == [f["id"] for f in second["features"]]
    assert not set(ids) & {f["id"] for f in other_job["features"]}


def test_multipolygon_gives_one_annotation_per_polygon_with_holes_kept() -> None:
    feature = stored_feature(
        geometry={"type": "MultiPolygon", "coordinates": [SQUARE_WITH_HOLE, SMALL_SQUARE]},
        object_type="annotation",
        classification="Tissue",
        object_measurements=[{"area_px": 91.0}, {"area_px": 25.0}],
    )

    features = feature_to_qupath(feature)["features"]

    assert len(features) == 2
    assert features[0]["geometry"] == {"type": "Polygon", "coordinates": SQUARE_WITH_HOLE}
    assert shape(features[0]["geometry"]).area == pytest.approx(91.0)
    assert len(shape(features[0]["geometry"]).interiors) == 1
    assert features[1]["geometry"] == {"type": "Polygon", "coordinates": SMALL_SQUARE}
    for feature_out in features:
        properties = feature_out["properties"]
        assert properties["objectType"] == "annotation"
        assert properties["isLocked"] is False
        assert properties["classification"]["name"] == "Tissue"
    assert [f["properties"]["measurements"] for f in features] == [
        {"area_px": 91.0},
        {"area_px": 25.0},
    ]


def test_measurements_are_an_object_of_finite_numbers() -> None:
    feature = stored_feature(
        object_measurements=[
            {"area": 3, "mean": 0.5, "label": "x", "flag": True, "bad": math.nan},
            {"area": 4.0},
        ]
    )

    features = feature_to_qupath(feature)["features"]

    assert features[0]["properties"]["measurements"] == {"area": 3.0, "mean": 0.5}
    assert features[1]["properties"]["measurements"] == {"area": 4.0}
    assert features[2]["properties"]["measurements"] == {}
    json.dumps(features, allow_nan=False)


def test_null_geometry_gives_an_empty_collection() -> None:
    failed = {"type": "Feature", "geometry": None, "properties": {"job_id": "j", "error": "boom"}}

    assert feature_to_qupath(failed) == {"type": "FeatureCollection", "features": []}


def test_empty_multipolygon_gives_an_empty_collection() -> None:
    feature = stored_feature(geometry={"type": "MultiPolygon", "coordinates": []})

    assert feature_to_qupath(feature)["features"] == []


def test_no_classification_means_no_classification_property() -> None:
    features = feature_to_qupath(stored_feature(classification=None))["features"]

    assert all("classification" not in f["properties"] for f in features)


def test_to_qupath_uses_the_result_fields() -> None:
    result = AlgorithmResult(
        geometry={"type": "MultiPolygon", "coordinates": [SQUARE_WITH_HOLE]},
        measurements={"tissue_fraction": 0.5},
        object_type="annotation",
        classification="Tissue",
        object_measurements=[{"area_px": 91.0}],
    )

    (feature,) = to_qupath(result)["features"]

    assert uuid.UUID(feature["id"])
    assert feature["geometry"]["type"] == "Polygon"
    assert feature["properties"] == {
        "objectType": "annotation",
        "measurements": {"area_px": 91.0},
        "classification": {"name": "Tissue", "color": classification_color("Tissue")},
        "isLocked": False,
    }


def test_points_can_be_exported_as_small_polygons() -> None:
    result = AlgorithmResult(geometry={"type": "MultiPoint", "coordinates": [[10, 20]]})

    (feature,) = to_qupath(result, point_radius=3.0)["features"]

    polygon = shape(feature["geometry"])
    assert feature["geometry"]["type"] == "Polygon"
    assert polygon.is_valid
    assert polygon.centroid.x == pytest.approx(10.0)
    assert polygon.centroid.y == pytest.approx(20.0)
    assert polygon.area == pytest.approx(math.pi * 9, rel=0.1)


def test_unknown_classification_gets_a_stable_valid_color() -> None:
    color = classification_color("Some class")

    assert color == classification_color("Some class")
    assert len(color) == 3
    assert all(0 <= c <= 255 for c in color)


@pytest.mark.parametrize(
    "feature",
    [
        stored_feature(object_type="cell"),
        stored_feature(geometry={"type": "Weird", "coordinates": []}),
    ],
)
def test_bad_input_is_rejected(feature: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"unknown object type|unsupported geometry"):
        feature_to_qupath(feature)
