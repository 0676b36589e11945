"""Nucleus centres in H&E bright-field images, with numpy and scipy only.

The method, at a working resolution where a nucleus is about 11 px across:

1. hematoxylin density by colour deconvolution (nuclei are the hematoxylin-rich objects);
2. a foreground mask: smoothed hematoxylin above its Otsu threshold over the pixels
   that are not glass, with an absolute floor so glass, stroma and pure eosin give
   (almost) no foreground;
3. a response that adds the mask's distance transform (high in the middle of a
   nucleus, splits touching ones) to a difference of Gaussians tuned to the nucleus
   size (a blob detector, robust where the mask is poor);
4. local maxima of that response at least about half a diameter apart, inside the
   mask, with an absolute minimum blob contrast, each moved to the centroid of the
   mask around it; two that end within a quarter diameter are one nucleus.

Outside the image counts as background for the distance transform, so a nucleus cut
by the border is reported at the centre of its visible part, as annotators do.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import cv2
import numpy as np
import numpy.typing as npt
from scipy import ndimage
from scipy.spatial import cKDTree

from primaa.plugins.builtin.stain import EOSIN, HEMATOXYLIN, hematoxylin_reduced

Points = npt.NDArray[np.float64]
FloatImage = npt.NDArray[np.float32]

#: Nucleus diameter, in working pixels, that the image is reduced to (about).
WORKING_DIAMETER = 11.0
#: Smoothing of hematoxylin before thresholding, in working pixels: removes chromatin texture.
MASK_SMOOTHING = 1.5
#: Smoothing of the distance transform, in working pixels.
DISTANCE_SMOOTHING = 1.0
#: Lowest foreground threshold in hematoxylin optical density (OD); dev-set Otsu is 0.47-0.62,
#: dense eosin reaches about 0.2.
MIN_MASK_THRESHOLD = 0.25
#: Smoothed hematoxylin OD below this (glass, mostly) is left out of the Otsu histogram, so a
#: slide tile that is mostly glass thresholds its tissue as the tissue alone would be. With
#: the glass in, Otsu separates glass from tissue and lands on the floor above: a third more
#: false nuclei in tissue next to glass. Such pale pixels are below the floor, never nuclei.
GLASS_OD = 0.1
#: Fewer pixels than this above GLASS_OD: no tissue to speak of, threshold the whole tile.
MIN_TISSUE_SAMPLES = 256
#: Lowest blob contrast (difference of Gaussians, OD) of a nucleus; dev-set nuclei are above 0.04.
MIN_BLOB_CONTRAST = 0.03
#: Weight of the blob contrast against the distance transform (in radii), per 0.05 OD.
BLOB_WEIGHT = 0.3
#: Lowest response at a nucleus centre at sensitivity 0.5.
RESPONSE_THRESHOLD = 0.4
#: Peaks are moved to the mask centroid within this fraction of the diameter.
REFINE_RADIUS = 0.6
#: Peaks closer than this fraction of the diameter are one nucleus.
SUPPRESSION = 0.5
#: Centres closer than this fraction of the diameter after recentring are one nucleus:
#: two peaks of one blob can move to the same centroid.
MERGE = 0.25


def working_factor(diameter: float) -> int:
    """Integer reduction that brings ``diameter`` near :data:`WORKING_DIAMETER`."""
    return max(1, int(diameter / WORKING_DIAMETER + 0.5))


def otsu_threshold(values: FloatImage, bins: int = 256) -> float:
    """Threshold that best separates two classes of ``values`` (Otsu, 1979)."""
    low, high = float(values.min()), float(values.max())
    if not high > low:
        return high
    counts, edges = np.histogram(values, bins=bins, range=(low, high))
    centres = (edges[:-1] + edges[1:]) / 2
    weight_low = np.cumsum(counts, dtype=np.float64)
    weight_high = weight_low[-1] - weight_low
    mass_low = np.cumsum(counts * centres)
    mean_low = mass_low / np.maximum(weight_low, 1.0)
    mean_high = (mass_low[-1] - mass_low) / np.maximum(weight_high, 1.0)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(edges[1:][int(np.argmax(between))])


def detect_nuclei(
    rgb: npt.NDArray[np.uint8],
    diameter: float = 22.0,
    sensitivity: float = 0.5,
    hematoxylin_vector: Sequence[float] = HEMATOXYLIN,
    eosin_vector: Sequence[float] = EOSIN,
    *,
    hematoxylin: FloatImage | None = None,
) -> Points:
    """Return nucleus centres as an ``(N, 2)`` array of ``[x, y]`` full-resolution pixels.

    ``diameter`` is the expected nucleus diameter in pixels; ``sensitivity``
    (0 to 1) lowers all thresholds as it grows. ``hematoxylin``, if given, is
    this image's hematoxylin already reduced by ``working_factor(diameter)``.
    Memory grows with the image: use :func:`detect_nuclei_tiled` for large ones.
    """
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise ValueError("expected an RGB image of shape (height, width, 3)")
    if not 0.0 <= sensitivity <= 1.0:
        raise ValueError("sensitivity must be between 0 and 1")
    if not diameter > 0:
        raise ValueError("diameter must be positive")
    factor = working_factor(diameter)
    if rgb.shape[0] < factor or rgb.shape[1] < factor:
        return np.zeros((0, 2))
    d = diameter / factor
    strictness = 1.0 + 0.8 * (0.5 - sensitivity)  # 1.4 at sensitivity 0, 0.6 at 1
    reduced_shape = (rgb.shape[0] // factor, rgb.shape[1] // factor)
    if hematoxylin is not None and hematoxylin.shape == reduced_shape:
        hema = hematoxylin
    else:
        hema = hematoxylin_reduced(rgb, factor, hematoxylin_vector, eosin_vector)

    smooth = gaussian(hema, MASK_SMOOTHING)
    # Every other pixel in each direction is plenty for a histogram, at a quarter of the cost.
    sample = smooth[::2, ::2]
    tissue = sample[sample > GLASS_OD]
    otsu = otsu_threshold(tissue if tissue.size >= MIN_TISSUE_SAMPLES else sample)
    threshold = max(otsu, MIN_MASK_THRESHOLD) * (0.5 + 0.5 * strictness)
    mask = smooth > threshold
    if not mask.any():
        return np.zeros((0, 2))
    fill_small_holes(mask, math.pi * (d / 2) ** 2)
    # Chessboard distance scores as well as the Euclidean one here, at a fraction of the cost.
    padded = np.pad(mask, 1).view(np.uint8)
    distance = np.asarray(cv2.distanceTransform(padded, cv2.DIST_C, 3), dtype=np.float32)
    distance = distance[1:-1, 1:-1]
    response = gaussian(distance, DISTANCE_SMOOTHING)
    response *= 2.0 / d

    sigma = 0.85 * d / (2.0 * math.sqrt(2.0))
    # Gaussians compose: the blob's narrower one continues the mask smoothing.
    if sigma > MASK_SMOOTHING:
        blob = gaussian(smooth, math.sqrt(sigma**2 - MASK_SMOOTHING**2))
    else:
        blob = gaussian(hema, sigma)
    # The wider Gaussian from the narrower one: a shorter kernel for the same result.
    blob -= gaussian(blob, math.sqrt(1.6**2 - 1.0) * sigma)
    response += blob * (BLOB_WEIGHT / 0.05)

    size = max(3, int(SUPPRESSION * d) | 1)
    peaks = _max_filter(response, size) == response
    peaks &= response > RESPONSE_THRESHOLD * strictness
    peaks &= mask
    peaks &= blob > MIN_BLOB_CONTRAST * strictness
    rows, cols = _plateau_centres(peaks)
    strength = response[np.rint(rows).astype(np.intp), np.rint(cols).astype(np.intp)]
    rows, cols = _recentre(mask, rows, cols, REFINE_RADIUS * d)
    keep = strongest_apart(np.column_stack([rows, cols]), strength, MERGE * d)
    rows, cols = rows[keep], cols[keep]
    xs = (cols + 0.5) * factor - 0.5
    ys = (rows + 0.5) * factor - 0.5
    return np.column_stack([xs, ys])


def _recentre(
    mask: npt.NDArray[np.bool_],
    rows: npt.NDArray[np.float64],
    cols: npt.NDArray[np.float64],
    radius: float,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Move each peak to the centroid of the mask within ``radius`` of it (one mean-shift step).

    Annotated centres are area centroids; a peak pulled towards a darker edge or a
    touching neighbour moves back towards the middle of its blob.
    """
    if len(rows) == 0:
        return rows, cols
    r = max(1, round(radius))
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    disk = dy**2 + dx**2 <= r * r
    dy, dx = dy[disk], dx[disk]
    ys = np.clip(np.rint(rows).astype(np.intp)[:, None] + dy, 0, mask.shape[0] - 1)
    xs = np.clip(np.rint(cols).astype(np.intp)[:, None] + dx, 0, mask.shape[1] - 1)
    inside = mask[ys, xs]
    total = inside.sum(axis=1)
    found = total > 0
    weight = np.maximum(total, 1)
    new_rows = np.where(found, (inside * ys).sum(axis=1) / weight, rows)
    new_cols = np.where(found, (inside * xs).sum(axis=1) / weight, cols)
    return new_rows, new_cols


def strongest_apart(
    points: npt.NDArray[np.float64], strength: npt.NDArray[np.float32], radius: float
) -> npt.NDArray[np.bool_]:
    """Which points to keep so that none is within ``radius`` of a stronger kept one."""
    keep = np.ones(len(points), np.bool_)
    if len(points) < 2:
        return keep
    pairs = cKDTree(points).query_pairs(radius, output_type="ndarray")
    if len(pairs) == 0:
        return keep
    rank = np.empty(len(points), np.intp)
    rank[np.argsort(-strength, kind="stable")] = np.arange(len(points))
    stronger = np.where(rank[pairs[:, 0]] < rank[pairs[:, 1]], pairs[:, 0], pairs[:, 1])
    weaker = pairs[:, 0] + pairs[:, 1] - stronger
    for index in np.argsort(rank[stronger], kind="stable"):
        if keep[stronger[index]]:
            keep[weaker[index]] = False
    return keep


def gaussian(image: FloatImage, sigma: float) -> FloatImage:
    """Gaussian smoothing as ``ndimage.gaussian_filter(truncate=3)`` (reflected border),
    by OpenCV: the same values within float32 rounding, several times faster."""
    radius = int(3.0 * sigma + 0.5)
    size = 2 * radius + 1
    source = np.ascontiguousarray(image, dtype=np.float32)
    out = cv2.GaussianBlur(source, (size, size), sigma, borderType=cv2.BORDER_REFLECT)
    return np.asarray(out, dtype=np.float32)


def fill_small_holes(mask: npt.NDArray[np.bool_], max_area: float) -> npt.NDArray[np.bool_]:
    """Fill, in place, background enclosed by the mask and smaller than a nucleus; return it.

    Vesicular nuclei have a pale centre inside a dark rim: filled, their distance
    transform peaks at the centre instead of on the rim. Background touching the
    image border is never a hole; larger holes (lumens) stay open.
    """
    # Label 0: the mask itself; then one label per 4-connected background region.
    count, labels = cv2.connectedComponents((~mask).view(np.uint8), connectivity=4)
    if count < 3:
        return np.zeros_like(mask)
    areas = np.bincount(labels.ravel(), minlength=count)
    fill = areas <= max_area
    fill[0] = False
    for edge in (labels[0], labels[-1], labels[:, 0], labels[:, -1]):
        fill[edge] = False
    holes: npt.NDArray[np.bool_] = fill[labels]
    mask |= holes
    return holes


def _max_filter(image: FloatImage, size: int) -> FloatImage:
    """Square maximum filter by shifted maxima, border replicated.

    For the few-pixel windows used here this is several times faster than
    ``ndimage.maximum_filter``.
    """
    half = size // 2
    padded = np.pad(image, half, mode="edge")
    rows, cols = image.shape
    along_rows = padded[:, half : half + cols].copy()
    for shift in range(size):
        if shift != half:
            np.maximum(along_rows, padded[:, shift : shift + cols], out=along_rows)
    out = along_rows[half : half + rows].copy()
    for shift in range(size):
        if shift != half:
            np.maximum(out, along_rows[shift : shift + rows], out=out)
    return out


def _plateau_centres(
    peaks: npt.NDArray[np.bool_],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """One position per group of touching peak pixels (flat maxima give several)."""
    rows, cols = np.nonzero(peaks)
    if len(rows) < 2:
        return rows.astype(np.float64), cols.astype(np.float64)
    labels, n = ndimage.label(peaks, structure=np.ones((3, 3), dtype=bool))
    if n == len(rows):
        return rows.astype(np.float64), cols.astype(np.float64)
    ids = labels[rows, cols] - 1
    counts = np.bincount(ids, minlength=n)
    return (
        np.bincount(ids, weights=rows, minlength=n) / counts,
        np.bincount(ids, weights=cols, minlength=n) / counts,
    )


def tile_margin(diameter: float) -> int:
    """Context each tile needs around its own area so filters near its edges see real pixels."""
    return math.ceil(3.0 * diameter) + 8


def detect_nuclei_tiled(
    rgb: npt.NDArray[np.uint8],
    diameter: float = 22.0,
    sensitivity: float = 0.5,
    hematoxylin_vector: Sequence[float] = HEMATOXYLIN,
    eosin_vector: Sequence[float] = EOSIN,
    tile_size: int = 2048,
    progress: Callable[[float], None] | None = None,
    *,
    hematoxylin: FloatImage | None = None,
) -> Points:
    """Like :func:`detect_nuclei`, in overlapping tiles so memory stays bounded.

    Each tile is processed with a margin of context and keeps only the centres
    inside its own core area, so a nucleus on a border is reported once. The
    foreground threshold adapts to each tile, which follows staining that
    drifts across a slide.
    ``progress`` is called with the fraction done after each tile; whatever it
    raises (e.g. a cancellation) propagates. ``hematoxylin`` (the whole image's,
    reduced) spares recomputing it when the image is a single tile.
    """
    height, width = rgb.shape[:2]
    factor = working_factor(diameter)
    # Cores aligned on the block-averaging grid, so tiles see the same reduced pixels.
    step = max(factor, (tile_size // factor) * factor)
    margin = math.ceil(tile_margin(diameter) / factor) * factor
    cores = [(y, x) for y in range(0, height, step) for x in range(0, width, step)]
    found: list[Points] = []
    for done, (y0, x0) in enumerate(cores, start=1):
        y1, x1 = min(y0 + step, height), min(x0 + step, width)
        ty0, tx0 = max(0, y0 - margin), max(0, x0 - margin)
        ty1, tx1 = min(height, y1 + margin), min(width, x1 + margin)
        points = detect_nuclei(
            rgb[ty0:ty1, tx0:tx1],
            diameter,
            sensitivity,
            hematoxylin_vector,
            eosin_vector,
            hematoxylin=hematoxylin if len(cores) == 1 else None,
        )
        points += (tx0, ty0)
        inside = (
            (points[:, 0] >= x0 - 0.5)
            & (points[:, 0] < x1 - 0.5)
            & (points[:, 1] >= y0 - 0.5)
            & (points[:, 1] < y1 - 0.5)
        )
        found.append(points[inside])
        if progress is not None:
            progress(done / len(cores))
    if not found:
        return np.zeros((0, 2))
    return np.concatenate(found)
