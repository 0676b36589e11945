"""Nucleus centres from the network's heat map: local maxima above a threshold."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import ndimage

FloatMap = npt.NDArray[np.float32]

#: Two centres closer than this (heat-map px, at 1 µm/px) are one: 2 µm, well under the
#: radius of the smallest common nucleus.
MIN_DISTANCE = 2


def find_peaks(
    heat: FloatMap, threshold: float, min_distance: int = MIN_DISTANCE
) -> npt.NDArray[np.float64]:
    """``[x, y]`` of the local maxima of ``heat`` above ``threshold``, refined below a pixel.

    A maximum is the largest value in its ``(2 * min_distance + 1)`` square; plateaus
    (equal neighbours) keep one point. Each point then moves to the vertex of a parabola
    through the logarithm of the heat map and its two neighbours, along each axis: exact for
    a Gaussian peak, which is what the network was trained to draw.
    """
    if heat.size == 0:
        return np.zeros((0, 2))
    size = 2 * min_distance + 1
    maxima = (heat == ndimage.maximum_filter(heat, size=size, mode="nearest")) & (heat > threshold)
    labels, count = ndimage.label(maxima, structure=np.ones((3, 3)))
    if count == 0:
        return np.zeros((0, 2))
    # Centre of each plateau (almost all are one pixel): bincount is much cheaper than
    # ndimage.center_of_mass over hundreds of labels.
    at_rows, at_columns = np.nonzero(maxima)
    label = labels[at_rows, at_columns]
    pixels = np.bincount(label, minlength=count + 1)[1:]
    seeds = np.stack(
        [
            np.bincount(label, at_rows, minlength=count + 1)[1:] / pixels,
            np.bincount(label, at_columns, minlength=count + 1)[1:] / pixels,
        ],
        axis=1,
    )
    rows = np.clip(np.rint(seeds[:, 0]).astype(np.intp), 0, heat.shape[0] - 1)
    columns = np.clip(np.rint(seeds[:, 1]).astype(np.intp), 0, heat.shape[1] - 1)
    padded = np.pad(heat, 1, mode="edge")

    def log(r: npt.NDArray[np.intp], c: npt.NDArray[np.intp]) -> npt.NDArray[np.float64]:
        return np.log(np.clip(padded[r, c].astype(np.float64), 1e-6, None))

    centre = log(rows + 1, columns + 1)
    d_row = _vertex(log(rows, columns + 1), centre, log(rows + 2, columns + 1))
    d_column = _vertex(log(rows + 1, columns), centre, log(rows + 1, columns + 2))
    return np.stack([columns + d_column, rows + d_row], axis=1)


def _vertex(
    before: npt.NDArray[np.float64], at: npt.NDArray[np.float64], after: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Offset (-0.5 to 0.5) of the top of the parabola through three equally spaced values."""
    curvature = before - 2.0 * at + after
    safe = np.where(curvature < 0, curvature, -1.0)
    offset = np.where(curvature < 0, (before - after) / (2.0 * safe), 0.0)
    return np.asarray(np.clip(offset, -0.5, 0.5), dtype=np.float64)
