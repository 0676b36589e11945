"""Tile results merged, as they arrive, into one result in level-0 coordinates.

Each tile's objects are kept by the tile whose core holds their centre
(:class:`primaa.imaging.slides.TileMerger`), so an object seen by two
overlapping tiles is kept once. Only the kept objects are held, as level-0
arrays, with their per-object measurements; the pixels stay in the workers.
Points (``MultiPoint``, ``Point``) and regions (``MultiPolygon``, ``Polygon``,
holes included) merge; other geometries cannot be split by tiles.

A detector's centre can move by a pixel with a tile's context, so now and then
an object on a seam is kept by both tiles: centres from different tiles closer
than :data:`SEAM_RADIUS` working pixels, both that close to their core's edge,
are one object (:func:`primaa.imaging.slides.seam_duplicates`). Region outlines
are clipped to the slide (a tile reads white beyond it).

Per-tile measurements describe a tile, not the slide, so the merged result
measures what merging knows: ``count`` (objects kept), ``tiles`` and
``analysed_megapixels`` (the level-0 area of the tiles' cores), and
``density_per_megapixel`` for points. An algorithm that knows how its own
measurements add up (``combine``, :class:`primaa.plugins.algorithm.TileMeasurements`)
gets each tile's, weighted by core area, and its slide measurements join these.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from primaa.imaging.slides import Tile, TileMerger, seam_duplicates, to_level0
from primaa.jobs.ports import TaskError
from primaa.plugins.algorithm import AlgorithmResult, Geometry, TileMeasurements

__all__ = ["Combine", "TileResults", "whole_to_level0"]

#: Two points from two tiles closer than this (working pixels), by a seam, are one.
SEAM_RADIUS: Final = 3.0

_POINTS = {"MultiPoint", "Point"}
_REGIONS = {"MultiPolygon", "Polygon"}


Points = npt.NDArray[np.float64]

#: An algorithm's ``combine`` with the job's parameters bound.
Combine = Callable[[Sequence[TileMeasurements]], Mapping[str, float] | None]


def _rounded(points: npt.NDArray[np.float64]) -> list[list[float]]:
    """To 0.01 px, as lists: numpy's rounding, since ``round`` per value took 0.5 s of a
    slide's 0.66 s merge for 113,000 points (``bench.slide_jobs``), with no worker busy."""
    rounded: list[list[float]] = np.round(np.asarray(points, np.float64), 2).tolist()
    return rounded


def _parts(geometry: Geometry) -> list[Any]:
    """The parts of a geometry: points for points, polygons (lists of rings) for regions."""
    kind = geometry.get("type")
    coordinates = geometry.get("coordinates") or []
    if kind in ("Point", "Polygon"):
        return [coordinates] if coordinates else []
    if kind in ("MultiPoint", "MultiPolygon"):
        return list(coordinates)
    raise TaskError(f"a {kind} geometry cannot be merged across tiles (points or polygons only)")


def _clipped(points: npt.NDArray[np.float64], dimensions: tuple[int, int]) -> Points:
    """Inside the slide: pixel centres are whole numbers, its edges at -0.5 and size - 0.5."""
    high = np.array(dimensions, np.float64) - 0.5
    result: Points = np.clip(points, -0.5, high)
    return result


def whole_to_level0(
    tile: Tile, result: AlgorithmResult, dimensions: tuple[int, int]
) -> AlgorithmResult:
    """A result on an image read whole (one tile) moved to level 0, nothing dropped."""
    geometry = result.geometry
    if geometry is None or (tile.downsample == 1.0 and tile.x == tile.y == 0):
        return result
    parts = _parts(geometry)
    if geometry["type"] in _POINTS:
        moved: list[Any] = _rounded(to_level0(tile, parts))
        return _with_geometry(result, "MultiPoint", moved)
    moved = [
        [_rounded(_clipped(to_level0(tile, ring), dimensions)) for ring in polygon]
        for polygon in parts
    ]
    return _with_geometry(result, "MultiPolygon", moved)


def _with_geometry(result: AlgorithmResult, kind: str, coordinates: list[Any]) -> AlgorithmResult:
    return AlgorithmResult(
        geometry={"type": kind, "coordinates": coordinates},
        measurements=result.measurements,
        object_type=result.object_type,
        classification=result.classification,
        object_measurements=result.object_measurements,
    )


class TileResults:
    """Adds each tile's result as it comes; :meth:`result` is the merged one."""

    def __init__(self, dimensions: tuple[int, int], combine: Combine | None = None) -> None:
        self._dimensions = dimensions
        self._combine = combine
        self._measured: list[tuple[int, TileMeasurements]] = []
        self._seen: list[Tile] = []
        self._merger = TileMerger()
        self._holes: list[list[npt.NDArray[np.float64]]] = []
        self._kind: str | None = None
        self._object_measurements: list[Mapping[str, float]] = []
        self._has_object_measurements = False
        self._first: AlgorithmResult | None = None
        self._tiles = 0
        self._core_pixels = 0.0

    def add(self, tile: Tile, result: AlgorithmResult) -> None:
        """Keep the objects whose centre is in the tile's core; raise TaskError if unmergeable."""
        self._tiles += 1
        self._seen.append(tile)
        x0, y0, x1, y1 = tile.core
        area = (x1 - x0) * (y1 - y0) * tile.downsample**2
        self._core_pixels += area
        if self._combine is not None:
            self._measured.append((tile.index, TileMeasurements(result.measurements, area)))
        if result.geometry is None:
            return
        if self._first is None:
            self._first = result
        parts = _parts(result.geometry)
        kind = "points" if result.geometry["type"] in _POINTS else "regions"
        if self._kind not in (None, kind):
            raise TaskError(f"the tiles returned both points and regions ({kind} after points)")
        self._kind = kind
        if kind == "points":
            kept = self._merger.add_points(tile, np.asarray(parts, np.float64).reshape(-1, 2))
        else:
            exteriors = [polygon[0] for polygon in parts]
            kept = self._merger.add_polygons(tile, exteriors) if exteriors else np.empty(0, int)
            self._holes.extend(
                [to_level0(tile, ring) for ring in parts[index][1:]] for index in kept
            )
        self._keep_measurements(result.object_measurements, kept, len(parts))

    def _keep_measurements(
        self,
        measurements: Sequence[Mapping[str, float]] | None,
        kept: npt.NDArray[np.intp],
        count: int,
    ) -> None:
        if measurements is None or len(measurements) != count:
            self._object_measurements.extend({} for _ in kept)
            return
        self._has_object_measurements = True
        self._object_measurements.extend(measurements[int(index)] for index in kept)

    def _combined(self) -> dict[str, float]:
        """The algorithm's own slide measurements from its tiles', in tile order."""
        if self._combine is None:
            return {}
        tiles = [measured for _, measured in sorted(self._measured, key=lambda item: item[0])]
        try:
            combined = self._combine(tiles)
            return {} if combined is None else {str(k): float(v) for k, v in combined.items()}
        except Exception as exc:
            raise TaskError(
                f"combining the measurements of {len(tiles)} tiles failed: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    def result(self) -> AlgorithmResult:
        """The merged result: level-0 geometry of every kept object, and the counts."""
        megapixels = self._core_pixels / 1e6
        object_measurements = self._object_measurements
        geometry: Geometry | None = None
        count = 0
        if self._kind == "points":
            centres = self._merger.centres()
            radius = SEAM_RADIUS * self._seen[0].downsample
            keep = ~seam_duplicates(centres, self._merger.tile_indices(), self._seen, radius)
            object_measurements = [
                m for m, kept in zip(object_measurements, keep, strict=True) if kept
            ]
            count = int(keep.sum())
            geometry = {"type": "MultiPoint", "coordinates": _rounded(centres[keep])}
        elif self._kind == "regions":
            dims = self._dimensions
            polygons = [
                [_rounded(_clipped(ring, dims)) for ring in (exterior, *holes)]
                for exterior, holes in zip(self._merger.polygons(), self._holes, strict=True)
            ]
            count = len(polygons)
            geometry = {"type": "MultiPolygon", "coordinates": polygons}
        measurements: dict[str, float] = {
            "count": float(count),
            "tiles": float(self._tiles),
            "analysed_megapixels": round(megapixels, 3),
        }
        if self._kind == "points":
            measurements["density_per_megapixel"] = (
                round(count / megapixels, 3) if megapixels else 0.0
            )
        first = self._first
        return AlgorithmResult(
            geometry=geometry,
            measurements={**self._combined(), **measurements},
            object_type=first.object_type if first else "detection",
            classification=first.classification if first else None,
            object_measurements=object_measurements if self._has_object_measurements else None,
        )
