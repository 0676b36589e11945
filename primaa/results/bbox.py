"""The objects of a result inside a window, for a viewer that draws only what is in view.

A result's geometry is a ``MultiPoint`` (one point per object) or a ``MultiPolygon``
(one polygon per object), in level-0 pixels. :class:`ResultIndex` is built once per
result (the points, or each polygon's bounding box, as arrays) and answers windows
quickly: the objects whose point, or whose bounding box, meets the window. Past
``limit`` an evenly spaced sample is returned, with the true count and a coarse
density grid so a zoomed-out view can say how much is there.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt

__all__ = ["DENSITY_CELLS", "BadBbox", "ResultIndex", "ResultIndexCache", "parse_bbox"]

#: The density grid's cells along its longer side.
DENSITY_CELLS: Final = 32

Bbox = tuple[float, float, float, float]


#: What the API documents: four plain decimal numbers (no exponent, so always finite).
BBOX_PATTERN: Final = r"^-?[0-9]{1,15}(\.[0-9]{1,15})?(,-?[0-9]{1,15}(\.[0-9]{1,15})?){3}$"


class BadBbox(ValueError):
    """A ``bbox`` that is not four finite numbers x0,y0,x1,y1."""


def parse_bbox(text: str) -> Bbox:
    """``x0,y0,x1,y1``, either corner first: the window is the box between the two points
    (a zero width or height is a line or a point, which still meets what lies on it)."""
    parts = text.split(",")
    if len(parts) != 4:
        raise BadBbox(f"bbox must be four numbers x0,y0,x1,y1; got {len(parts)} values")
    try:
        x0, y0, x1, y1 = (float(part) for part in parts)
    except ValueError:
        raise BadBbox("bbox must be four numbers x0,y0,x1,y1") from None
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise BadBbox("bbox values must be finite numbers")
    return min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)


@dataclasses.dataclass(frozen=True, slots=True)
class ResultIndex:
    """A result Feature and, per object, the box it occupies (a point's box is the point)."""

    feature: Mapping[str, Any]
    kind: str | None
    objects: Sequence[Any]
    #: ``(n, 4)``: min x, min y, max x, max y of each object.
    boxes: npt.NDArray[np.float64]

    @classmethod
    def of(cls, feature: Mapping[str, Any]) -> ResultIndex:
        geometry = feature.get("geometry") or {}
        kind = geometry.get("type")
        coordinates = geometry.get("coordinates") or []
        if kind == "MultiPoint" and coordinates:
            points = np.asarray([(p[0], p[1]) for p in coordinates], np.float64)
            boxes = np.hstack([points, points])
        elif kind == "MultiPolygon" and coordinates:
            boxes = np.asarray([_polygon_box(polygon) for polygon in coordinates], np.float64)
        else:
            coordinates, boxes = [], np.empty((0, 4), np.float64)
        return cls(feature, kind, coordinates, boxes.reshape(-1, 4))

    def window(self, bbox: Bbox, limit: int) -> dict[str, Any]:
        """The result Feature with only the objects meeting ``bbox`` (at most ``limit``)."""
        x0, y0, x1, y1 = bbox
        boxes = self.boxes
        inside = np.flatnonzero(
            (boxes[:, 2] >= x0) & (boxes[:, 0] <= x1) & (boxes[:, 3] >= y0) & (boxes[:, 1] <= y1)
        )
        total = int(inside.size)
        chosen = inside
        if total > limit:
            chosen = inside[np.linspace(0, total - 1, limit).astype(np.intp)]
        properties = dict(self.feature.get("properties") or {})
        measurements = properties.get("object_measurements")
        if isinstance(measurements, list) and len(measurements) == len(self.objects):
            properties["object_measurements"] = [measurements[i] for i in chosen.tolist()]
        properties["view"] = {
            "bbox": list(bbox),
            "objects_in_view": total,
            "returned": int(chosen.size),
            "truncated": total > limit,
            "objects_total": len(self.objects),
            "density": self._density(inside, bbox) if total > limit else None,
        }
        geometry = None
        if self.kind is not None:
            objects = [self.objects[i] for i in chosen.tolist()]
            geometry = {"type": self.kind, "coordinates": objects}
        return {"type": "Feature", "geometry": geometry, "properties": properties}

    def _density(self, inside: npt.NDArray[np.intp], bbox: Bbox) -> dict[str, Any]:
        """Object counts on a grid over the window, by each object's centre."""
        x0, y0, x1, y1 = bbox
        side = max(x1 - x0, y1 - y0, 1.0) / DENSITY_CELLS
        cols = max(1, math.ceil((x1 - x0) / side))
        rows = max(1, math.ceil((y1 - y0) / side))
        boxes = self.boxes[inside]
        cx = (boxes[:, 0] + boxes[:, 2]) / 2
        cy = (boxes[:, 1] + boxes[:, 3]) / 2
        counts, _, _ = np.histogram2d(
            cy, cx, bins=(rows, cols), range=((y0, y0 + rows * side), (x0, x0 + cols * side))
        )
        return {
            "cell_size": side,
            "columns": cols,
            "rows": rows,
            "counts": counts.astype(np.int64).tolist(),
        }


def _polygon_box(polygon: Sequence[Sequence[Sequence[float]]]) -> tuple[float, ...]:
    ring = np.asarray(polygon[0], np.float64) if polygon else np.zeros((1, 2))
    return (*ring[:, :2].min(axis=0), *ring[:, :2].max(axis=0))


class ResultIndexCache:
    """The indexes of the last few results windows were asked of (a completed job's result
    never changes, so an index is never stale)."""

    def __init__(self, capacity: int = 4) -> None:
        self._capacity = capacity
        self._indexes: collections.OrderedDict[str, ResultIndex] = collections.OrderedDict()

    def get(self, job_id: str) -> ResultIndex | None:
        index = self._indexes.get(job_id)
        if index is not None:
            self._indexes.move_to_end(job_id)
        return index

    def discard(self, job_id: str) -> None:
        """Forget a deleted job's index."""
        self._indexes.pop(job_id, None)

    def put(self, job_id: str, index: ResultIndex) -> None:
        self._indexes[job_id] = index
        while len(self._indexes) > self._capacity:
            self._indexes.popitem(last=False)
