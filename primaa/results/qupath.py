"""Results as a GeoJSON FeatureCollection that QuPath imports as objects.

QuPath (0.4 and later) reads one object per Feature: ``properties.objectType``
picks annotation or detection, ``classification`` is ``{"name", "color"}``,
``measurements`` is a flat object of numbers and ``id`` is a UUID. Our result
holds all parts in one geometry, so it is split into one Feature per part;
a point becomes a ``Point`` (QuPath's points ROI) unless a radius is asked for.
"""

from __future__ import annotations

import hashlib
import math
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from primaa.plugins.algorithm import AlgorithmResult

#: Namespace for ids derived from a job id, so one job always exports the same ids.
_ID_NAMESPACE = uuid.UUID("6f1d3c2e-8a4b-5e7f-9c0d-1b2a3e4f5a6b")

#: Colours of the classifications our built-in algorithms use (QuPath RGB, 0 to 255).
CLASSIFICATION_COLORS: Mapping[str, tuple[int, int, int]] = {
    "Tissue": (0, 160, 60),
    "Nucleus": (30, 60, 200),
    "Tumor": (200, 0, 0),
    "Stroma": (150, 200, 150),
    "Immune cells": (160, 90, 160),
    "Necrosis": (50, 50, 50),
    "Other": (255, 200, 0),
}

_SPLITTABLE = {"MultiPoint": "Point", "MultiPolygon": "Polygon", "MultiLineString": "LineString"}
_SINGLE = {"Point", "Polygon", "LineString"}


def to_qupath(result: AlgorithmResult, *, point_radius: float | None = None) -> dict[str, Any]:
    """QuPath FeatureCollection of a fresh algorithm result (ids are random)."""
    objects = _objects(
        geometry=result.geometry,
        object_type=result.object_type,
        classification=result.classification,
        object_measurements=result.object_measurements,
        id_seed=None,
        point_radius=point_radius,
    )
    return {"type": "FeatureCollection", "features": list(objects)}


def feature_to_qupath(
    feature: Mapping[str, Any], *, point_radius: float | None = None
) -> dict[str, Any]:
    """QuPath FeatureCollection of a stored job result Feature.

    Ids derive from ``job_id`` when present, so downloading twice gives the same
    objects (QuPath can then tell a re-import from new objects).
    """
    return {
        "type": "FeatureCollection",
        "features": list(qupath_objects(feature, point_radius=point_radius)),
    }


def qupath_objects(
    feature: Mapping[str, Any], *, point_radius: float | None = None
) -> Iterator[dict[str, Any]]:
    """The Features of :func:`feature_to_qupath`'s collection one at a time, for a
    response that streams them (a slide's million objects are never one document)."""
    properties: Mapping[str, Any] = feature.get("properties") or {}
    job_id = properties.get("job_id")
    return _objects(
        geometry=feature.get("geometry"),
        object_type=properties.get("object_type") or "detection",
        classification=properties.get("classification"),
        object_measurements=properties.get("object_measurements"),
        id_seed=str(job_id) if job_id is not None else None,
        point_radius=point_radius,
    )


def classification_color(name: str) -> list[int]:
    """A known colour, or a stable one derived from the name (QuPath needs one to draw)."""
    known = CLASSIFICATION_COLORS.get(name)
    if known is not None:
        return list(known)
    digest = hashlib.sha256(name.encode()).digest()
    return [64 + digest[0] % 160, 64 + digest[1] % 160, 64 + digest[2] % 160]


def _objects(
    *,
    geometry: Mapping[str, Any] | None,
    object_type: str,
    classification: str | None,
    object_measurements: Sequence[Mapping[str, Any]] | None,
    id_seed: str | None,
    point_radius: float | None,
) -> Iterator[dict[str, Any]]:
    """Checks its arguments at once, before the first object is asked for."""
    if object_type not in ("detection", "annotation"):
        raise ValueError(f"unknown object type {object_type!r}")
    if point_radius is not None and not point_radius > 0:
        raise ValueError("point_radius must be positive")
    return _each_object(
        geometry, object_type, classification, object_measurements, id_seed, point_radius
    )


def _each_object(
    geometry: Mapping[str, Any] | None,
    object_type: str,
    classification: str | None,
    object_measurements: Sequence[Mapping[str, Any]] | None,
    id_seed: str | None,
    point_radius: float | None,
) -> Iterator[dict[str, Any]]:
    for index, part in enumerate(_parts(geometry)):
        measurements = (
            object_measurements[index]
            if object_measurements is not None and index < len(object_measurements)
            else {}
        )
        properties: dict[str, Any] = {
            "objectType": object_type,
            "measurements": _numbers(measurements),
        }
        if classification:
            properties["classification"] = {
                "name": classification,
                "color": classification_color(classification),
            }
        if object_type == "annotation":
            properties["isLocked"] = False
        yield {
            "type": "Feature",
            "id": _object_id(id_seed, index),
            "geometry": _as_qupath_geometry(part, point_radius),
            "properties": properties,
        }


def _parts(geometry: Mapping[str, Any] | None) -> Iterator[dict[str, Any]]:
    if geometry is None:
        return
    kind = geometry.get("type")
    if kind in _SPLITTABLE:
        for coordinates in geometry.get("coordinates") or []:
            yield {"type": _SPLITTABLE[kind], "coordinates": coordinates}
    elif kind in _SINGLE:
        yield {"type": kind, "coordinates": geometry.get("coordinates")}
    elif kind == "GeometryCollection":
        for member in geometry.get("geometries") or []:
            yield from _parts(member)
    else:
        raise ValueError(f"unsupported geometry type {kind!r}")


def _as_qupath_geometry(part: dict[str, Any], point_radius: float | None) -> dict[str, Any]:
    if part["type"] != "Point" or point_radius is None:
        return part
    x, y = part["coordinates"][:2]
    # Shapely only for this rare export form, so the service process does not load it.
    from shapely.geometry import Point
    from shapely.geometry.polygon import orient

    disk = orient(Point(float(x), float(y)).buffer(point_radius, quad_segs=4), sign=1.0)
    ring = [[float(px), float(py)] for px, py in disk.exterior.coords]
    return {"type": "Polygon", "coordinates": [ring]}


def _numbers(measurements: Mapping[str, Any]) -> dict[str, float]:
    """QuPath measurements are doubles; JSON has no NaN, so non-finite values are dropped."""
    numbers: dict[str, float] = {}
    for key, value in measurements.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if math.isfinite(value):
            numbers[str(key)] = float(value)
    return numbers


def _object_id(seed: str | None, index: int) -> str:
    if seed is None:
        return str(uuid.uuid4())
    return str(uuid.uuid5(_ID_NAMESPACE, f"{seed}/{index}"))
