"""Per-tile results merged into level-0 coordinates, each object kept once.

An object is kept by the tile whose core holds its centre. Cores partition the
working grid with half-open integer rectangles, and the test is made in the
tile's own coordinates (those the algorithm reported), so a centre exactly on a
seam belongs to exactly one tile.

Coordinates follow the plugin contract (docs/plugins.md): ``[x, y]`` with the
centre of the pixel at row i, column j at (j, i). A tile's pixel j therefore
spans [j - 0.5, j + 0.5), its core [x0 - 0.5, x1 - 0.5) in its own coordinates
(as ``detect_nuclei_tiled`` does), and the point u of a tile read at
``d`` level-0 pixels per pixel is at ``(tile.x + u + 0.5) * d - 0.5`` in level 0.

Results arrive tile by tile; the merger keeps only the kept objects, as level-0
arrays appended in chunks, and never needs two tiles at once.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from scipy.spatial import cKDTree

from primaa.imaging.slides.tiling import Tile

__all__ = ["TileMerger", "in_core", "polygon_centres", "seam_duplicates", "to_level0"]

Points = npt.NDArray[np.float64]


def _as_points(values: npt.ArrayLike) -> Points:
    points = np.asarray(values, dtype=np.float64)
    if points.size == 0:
        return np.empty((0, 2), np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"expected an (N, 2) array of x, y, got shape {points.shape}")
    return points


def to_level0(tile: Tile, points: npt.ArrayLike) -> Points:
    """Tile coordinates (working pixels) to level-0 coordinates."""
    local = _as_points(points)
    offset = np.array([tile.x + 0.5, tile.y + 0.5], np.float64)
    result: Points = (local + offset) * tile.downsample - 0.5
    return result


def in_core(tile: Tile, centres: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    """Which centres (tile coordinates) lie in the pixels of the tile's core."""
    local = _as_points(centres)
    x0, y0, x1, y1 = (edge - 0.5 for edge in tile.core_local)
    u, v = local[:, 0], local[:, 1]
    result: npt.NDArray[np.bool_] = (u >= x0) & (u < x1) & (v >= y0) & (v < y1)
    return result


def polygon_centres(polygons: Sequence[npt.ArrayLike]) -> Points:
    """Area centroid of each polygon (a ring of x, y vertices); vertex mean when flat."""
    centres = np.empty((len(polygons), 2), np.float64)
    for index, polygon in enumerate(polygons):
        ring = _as_points(polygon)
        if len(ring) == 0:
            raise ValueError(f"polygon {index} has no vertices")
        # Centred on a vertex: the shoelace sums stay exact far from the origin.
        origin = ring[0]
        x, y = (ring - origin).T
        xn, yn = np.roll(x, -1), np.roll(y, -1)
        cross = x * yn - xn * y
        area = cross.sum() / 2.0
        if abs(area) <= 1e-12 * max(1.0, float(np.ptp(ring, axis=0).max()) ** 2):
            centres[index] = ring.mean(axis=0)
        else:
            centres[index, 0] = ((x + xn) * cross).sum() / (6.0 * area) + origin[0]
            centres[index, 1] = ((y + yn) * cross).sum() / (6.0 * area) + origin[1]
    return centres


class TileMerger:
    """Collects the objects each tile keeps, in level-0 coordinates.

    A merger holds one kind of object, points or polygons. ``add_points`` and
    ``add_polygons`` return the indices (into what the tile reported) of the
    objects kept, so the caller can keep their measurements alongside, in the
    same order.
    """

    def __init__(self) -> None:
        self._kind: str | None = None
        self._points: list[Points] = []
        self._polygons: list[Points] = []
        self._tiles: list[npt.NDArray[np.int64]] = []

    def __len__(self) -> int:
        return sum(len(chunk) for chunk in self._tiles)

    def add_points(self, tile: Tile, points: npt.ArrayLike) -> npt.NDArray[np.intp]:
        """Keep the points (tile coordinates) that lie in the tile's core."""
        self._check_kind("points")
        local = _as_points(points)
        kept: npt.NDArray[np.intp] = np.flatnonzero(in_core(tile, local))
        self._append(tile, to_level0(tile, local[kept]))
        return kept

    def add_polygons(self, tile: Tile, polygons: Sequence[npt.ArrayLike]) -> npt.NDArray[np.intp]:
        """Keep the polygons (tile coordinates) whose area centroid lies in the tile's core."""
        self._check_kind("polygons")
        centres = polygon_centres(polygons)
        kept: npt.NDArray[np.intp] = np.flatnonzero(in_core(tile, centres))
        self._polygons.extend(to_level0(tile, polygons[i]) for i in kept)
        self._append(tile, to_level0(tile, centres[kept]))
        return kept

    def _check_kind(self, kind: str) -> None:
        if self._kind not in (None, kind):
            raise ValueError(f"this merger holds {self._kind}; use another one for {kind}")
        self._kind = kind

    def _append(self, tile: Tile, centres: Points) -> None:
        self._points.append(centres)
        self._tiles.append(np.full(len(centres), tile.index, np.int64))

    def centres(self) -> Points:
        """Level-0 centres of every kept object, in the order they were added, (N, 2)."""
        if not self._points:
            return np.empty((0, 2), np.float64)
        return np.concatenate(self._points)

    def polygons(self) -> list[Points]:
        """Level-0 vertices of every kept polygon, in the order they were added."""
        return list(self._polygons)

    def tile_indices(self) -> npt.NDArray[np.int64]:
        """The index of the tile that kept each object, aligned with :meth:`centres`."""
        if not self._tiles:
            return np.empty(0, np.int64)
        return np.concatenate(self._tiles)


def seam_duplicates(
    centres: npt.ArrayLike,
    owners: npt.ArrayLike,
    tiles: Sequence[Tile],
    radius: float,
) -> npt.NDArray[np.bool_]:
    """Which kept objects repeat another across a seam; drop them to keep each once.

    The centre rule keeps an object once when the tiles agree on its centre, but
    an algorithm's centre can move by a pixel with a tile's context, so an object
    on a seam is now and then kept by both tiles. Two kept centres closer than
    ``radius`` (level-0 pixels; below the smallest distance the algorithm ever
    reports between two objects), from different tiles and both within
    ``radius`` of their own core's edge, are one object: the one nearer its
    core's edge is marked. ``owners`` are the tile indices of
    :meth:`TileMerger.tile_indices`.
    """
    points = _as_points(centres)
    tile_of = np.asarray(owners, np.int64)
    marked = np.zeros(len(points), np.bool_)
    if len(points) < 2 or radius <= 0:
        return marked
    by_index = {tile.index: tile for tile in tiles}
    depth = np.empty(len(points), np.float64)
    for index in np.unique(tile_of):
        tile = by_index[int(index)]
        mine = tile_of == index
        # The core's edges in level-0 coordinates (pixel centres at whole numbers).
        x0, y0, x1, y1 = (edge * tile.downsample - 0.5 for edge in tile.core)
        x, y = points[mine, 0], points[mine, 1]
        depth[mine] = np.minimum.reduce([x - x0, x1 - x, y - y0, y1 - y])
    near = np.flatnonzero(depth < radius)
    if len(near) < 2:
        return marked
    pairs = cKDTree(points[near]).query_pairs(radius, output_type="ndarray")
    pairs = near[pairs]
    pairs = pairs[tile_of[pairs[:, 0]] != tile_of[pairs[:, 1]]]
    gaps = np.hypot(*(points[pairs[:, 0]] - points[pairs[:, 1]]).T)
    for a, b in pairs[np.argsort(gaps, kind="stable")]:
        if marked[a] or marked[b]:
            continue
        marked[b if (depth[b], -b) < (depth[a], -a) else a] = True
    return marked
