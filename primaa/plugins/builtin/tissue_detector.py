"""The tissue detector behind ``roi_detection``: mask, clean-up, outlines.

Kept apart from the algorithm's contract (``tissue.py``) so that the service
process, which only needs the parameter schema, never imports OpenCV or Shapely;
the workers that run the algorithm do.

The mask is computed at a reduced working resolution, so memory and time stay
bounded on whole-slide-sized inputs; outlines are scaled back to
full-resolution pixel coordinates at the end.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import shapely
import shapely.affinity
from PIL import Image
from shapely.geometry import MultiPolygon, Polygon, mapping
from shapely.geometry.polygon import orient

from primaa.plugins.algorithm import AlgorithmResult, Progress, RGBImage

#: Optical density of each uint8 intensity, so the full image never becomes float.
_OD_LUT = (-np.log10((np.arange(256, dtype=np.float32) + 1.0) / 256.0)).astype(np.float32)

#: The glass level of each channel is this percentile of the image...
_WHITE_PERCENTILE = 99.5
#: ...but never darker than this, so a tile without glass keeps an absolute reference.
_MIN_WHITE = 225

#: Pixels darker than this in every channel are scanner padding, not stain.
_BLACK = 20

#: Histogram of the score, for finding the glass peak.
_BIN_WIDTH = 0.002
_BINS = 500
#: A glass peak needs this share of all pixels in its tallest bin...
_MIN_GLASS_FRACTION = 0.002
#: ...and is never taken as narrower than this (optical density units).
_MIN_GLASS_SIGMA = 0.004

#: Output coordinates are snapped to this grid (full-resolution px): short JSON, still valid.
_GRID = 0.01

#: Bytes per strip when downsampling, so only one small strip is ever copied at a time.
_STRIP_BYTES = 16 * 1024 * 1024


def detect_tissue(
    image: RGBImage, parameters: Mapping[str, Any], progress: Progress
) -> AlgorithmResult:
    """Tissue regions of ``image`` as a MultiPolygon result, for validated ``parameters``."""
    height, width = image.shape[:2]
    factor = max(1, math.ceil(max(height, width) / int(parameters["working_size"])))
    small = _downsample(image, factor, progress)
    progress(0.4)
    raw = tissue_mask(small, float(parameters["sensitivity"]))
    progress(0.6)
    pixel_area = float(factor * factor)
    mask = _clean(
        raw,
        min_area=float(parameters["min_area"]) / pixel_area,
        min_hole_area=float(parameters["min_hole_area"]) / pixel_area,
    )
    progress(0.7)
    tolerance = float(parameters["simplify_tolerance"])
    polygons = _trace(mask, factor, width, height, tolerance, progress)
    polygons = _disjoint([p for p in polygons if p.area >= float(parameters["min_area"])])
    progress(0.98)
    areas = [float(p.area) for p in polygons]
    total = float(sum(areas))
    geometry = mapping(MultiPolygon(polygons))
    return AlgorithmResult(
        geometry={"type": "MultiPolygon", "coordinates": _lists(geometry["coordinates"])},
        measurements={
            "tissue_fraction": total / float(height * width) if height * width else 0.0,
            "region_count": float(len(polygons)),
            "tissue_area_px": total,
        },
        object_type="annotation",
        classification="Tissue",
        object_measurements=[{"area_px": a} for a in areas],
    )


def _downsample(image: RGBImage, factor: int, progress: Progress) -> RGBImage:
    """Box-average by an integer factor, one strip at a time (no full-size copy)."""
    if factor == 1:
        return np.ascontiguousarray(image[..., :3])
    height, width = image.shape[:2]
    strip = factor * max(1, _STRIP_BYTES // (3 * width * factor * factor))
    parts: list[RGBImage] = []
    for top in range(0, height, strip):
        block = np.ascontiguousarray(image[top : top + strip, :, :3])
        parts.append(np.asarray(Image.fromarray(block, "RGB").reduce(factor)))
        progress(0.4 * min(1.0, (top + strip) / height))
    return np.concatenate(parts, axis=0)


def tissue_mask(small: RGBImage, sensitivity: float) -> npt.NDArray[np.bool_]:
    """Tissue absorbs light in at least one channel; glass absorbs almost none.

    The score is the largest per-channel optical density, measured against the
    brightest part of the image in each channel (so tinted or dim glass reads
    as zero). Glass makes a narrow peak near zero: the threshold sits a few
    peak widths above it, and is clamped between a floor (so noise on pure glass
    is never tissue) and a ceiling (so noisy glass cannot hide pale tissue).
    Without a glass peak, the floor applies and the tile is mostly tissue.
    Near-black pixels are padding outside the scanned area, not tissue.
    """
    score = _max_optical_density(small)
    score[small.max(axis=2) < _BLACK] = 0.0
    score = np.asarray(cv2.medianBlur(score, 3), np.float32)
    floor = 0.10 - 0.06 * sensitivity
    ceiling = 0.20 - 0.10 * sensitivity
    threshold = floor
    glass = _glass_peak(score, below=floor)
    if glass is not None:
        centre, width = glass
        threshold = min(max(centre + (10.0 - 8.0 * sensitivity) * width, floor), ceiling)
    result: npt.NDArray[np.bool_] = score > threshold
    return result


def _glass_peak(score: npt.NDArray[np.float32], below: float) -> tuple[float, float] | None:
    """Centre and standard deviation of the glass peak, if the image shows glass.

    The width comes from the peak's right half-width at half maximum: the left
    side is clipped at zero and the far right is tissue.
    """
    hist, edges = np.histogram(score, bins=_BINS, range=(0.0, _BINS * _BIN_WIDTH))
    top = max(1, int(below / _BIN_WIDTH))
    mode = int(np.argmax(hist[:top]))
    if hist[mode] < _MIN_GLASS_FRACTION * score.size:
        return None
    after = np.nonzero(hist[mode:] < hist[mode] / 2.0)[0]
    half_width = (int(after[0]) if after.size else 1) * _BIN_WIDTH
    sigma = max(half_width / 1.1774, _MIN_GLASS_SIGMA)
    return float(edges[mode]) + _BIN_WIDTH / 2.0, sigma


def _max_optical_density(small: RGBImage) -> npt.NDArray[np.float32]:
    score = np.zeros(small.shape[:2], np.float32)
    for channel in range(3):
        plane = small[..., channel]
        white = max(_percentile(plane, _WHITE_PERCENTILE), _MIN_WHITE)
        lut = np.maximum(_OD_LUT - _OD_LUT[white], np.float32(0.0))
        np.maximum(score, lut[plane], out=score)
    return score


def _percentile(plane: RGBImage, percent: float) -> int:
    """Percentile of a uint8 plane from its histogram: no sort, no float copy."""
    counts = np.cumsum(np.bincount(plane.ravel(), minlength=256))
    return int(np.searchsorted(counts, counts[-1] * percent / 100.0))


def _clean(
    mask: npt.NDArray[np.bool_], *, min_area: float, min_hole_area: float
) -> npt.NDArray[np.uint8]:
    """Remove specks, bridge hairline gaps, drop small regions, fill small holes."""
    small = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    large = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    m = np.asarray(cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, small), np.uint8)
    m = np.asarray(cv2.morphologyEx(m, cv2.MORPH_CLOSE, large), np.uint8)
    m = _drop_small(m, min_area)
    holes = _drop_small(1 - m, min_hole_area, keep_border=True)
    result: npt.NDArray[np.uint8] = (1 - holes).astype(np.uint8)
    return result


def _drop_small(
    m: npt.NDArray[np.uint8], min_area: float, *, keep_border: bool = False
) -> npt.NDArray[np.uint8]:
    _, labels, stats, _centroids = cv2.connectedComponentsWithStats(m, connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] >= min_area
    if keep_border:
        h, w = m.shape
        x, y = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_TOP]
        x2 = x + stats[:, cv2.CC_STAT_WIDTH]
        y2 = y + stats[:, cv2.CC_STAT_HEIGHT]
        keep |= (x == 0) | (y == 0) | (x2 == w) | (y2 == h)
    keep[0] = False
    result: npt.NDArray[np.uint8] = keep[labels].astype(np.uint8)
    return result


def _trace(
    mask: npt.NDArray[np.uint8],
    factor: int,
    width: int,
    height: int,
    tolerance: float,
    progress: Progress,
) -> list[Polygon]:
    """Outer contours with their holes, as valid full-resolution polygons.

    With ``RETR_CCOMP`` OpenCV returns a two-level hierarchy: outer boundaries,
    each with its holes as children; tissue inside a hole is an outer again.
    """
    contours, hierarchy = cv2.findContours(mask, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return []
    links = hierarchy[0]
    polygons: list[Polygon] = []
    for index, contour in enumerate(contours):
        if index % 256 == 0:
            progress(0.7 + 0.25 * index / len(contours))
        if links[index][3] != -1:
            continue
        holes = []
        child = int(links[index][2])
        while child != -1:
            holes.append(_ring(contours[child]))
            child = int(links[child][0])
        polygons.extend(_finish(Polygon(_ring(contour), holes), factor, width, height, tolerance))
    return polygons


def _ring(contour: Any) -> npt.NDArray[np.float64]:
    points: npt.NDArray[np.float64] = np.asarray(contour, np.float64).reshape(-1, 2)
    if len(points) < 3:
        points = np.concatenate([points, points[-1:], points[-1:]])[:3]
    return points


def _finish(
    polygon: Polygon, factor: int, width: int, height: int, tolerance: float
) -> list[Polygon]:
    """Contours run through pixel centres: grow by half a pixel to reach pixel edges."""
    shape = shapely.make_valid(polygon).buffer(0.5, join_style="mitre")
    shape = shapely.affinity.translate(shape, 0.5, 0.5)
    shape = shapely.affinity.scale(shape, factor, factor, origin=(0.0, 0.0))
    shape = shape.intersection(shapely.box(0.0, 0.0, float(width), float(height)))
    if tolerance > 0:
        shape = shape.simplify(tolerance, preserve_topology=True)
    shape = shapely.set_precision(shapely.make_valid(shape), _GRID)
    return [orient(p, sign=1.0) for p in _polygons(shape)]


def _disjoint(polygons: list[Polygon]) -> list[Polygon]:
    """Simplifying regions one by one can make close neighbours overlap: merge those."""
    if MultiPolygon(polygons).is_valid:
        return polygons
    merged = shapely.set_precision(shapely.unary_union(polygons), _GRID)
    return [orient(p, sign=1.0) for p in _polygons(merged)]


def _polygons(shape: Any) -> list[Polygon]:
    if isinstance(shape, Polygon):
        return [shape] if not shape.is_empty else []
    return [p for part in getattr(shape, "geoms", []) for p in _polygons(part)]


def _lists(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_lists(v) for v in value]
    return float(value)
