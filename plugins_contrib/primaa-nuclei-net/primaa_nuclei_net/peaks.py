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
    maxima = heat > threshold
    maxima &= heat == _maximum_filter(heat, min_distance)
    at_rows, at_columns = np.nonzero(maxima)
    if len(at_rows) == 0:
        return np.zeros((0, 2))
    if _touching(maxima):
        labels, count = ndimage.label(maxima, structure=np.ones((3, 3), dtype=bool))
        rows, columns = _plateau_centres(labels[at_rows, at_columns], count, at_rows, at_columns)
    else:
        rows, columns = at_rows, at_columns
    # The point and its four neighbours (edges repeated), in one gather and one logarithm.
    last_row, last_column = heat.shape[0] - 1, heat.shape[1] - 1
    up, down = np.maximum(rows - 1, 0), np.minimum(rows + 1, last_row)
    left, right = np.maximum(columns - 1, 0), np.minimum(columns + 1, last_column)
    around = heat[np.stack([rows, up, down, rows, rows]), np.stack([columns] * 3 + [left, right])]
    logs = np.log(np.maximum(around, np.float32(1e-6)).astype(np.float64))
    d_row = _vertex(logs[1], logs[0], logs[2])
    d_column = _vertex(logs[3], logs[0], logs[4])
    return np.stack([columns + d_column, rows + d_row], axis=1)


def _maximum_filter(heat: FloatMap, radius: int) -> FloatMap:
    """The maximum over each ``(2 * radius + 1)`` square, edges repeated: scipy's
    ``maximum_filter(mode="nearest")`` as shifted ``np.maximum`` passes: 0.085 against
    0.385 ms on a 512 px tile's heat map, where scipy's filter was a third of the peaks."""
    rows = heat.copy()
    for shift in range(1, radius + 1):
        np.maximum(rows[shift:], heat[:-shift], out=rows[shift:])
        np.maximum(rows[:-shift], heat[shift:], out=rows[:-shift])
    out = rows.copy()
    for shift in range(1, radius + 1):
        np.maximum(out[:, shift:], rows[:, :-shift], out=out[:, shift:])
        np.maximum(out[:, :-shift], rows[:, shift:], out=out[:, :-shift])
    return out


def _touching(mask: npt.NDArray[np.bool_]) -> bool:
    """Whether two set pixels of ``mask`` are 8-connected neighbours (a plateau)."""
    return bool(
        (mask[:, 1:] & mask[:, :-1]).any()
        or (mask[1:] & mask[:-1]).any()
        or (mask[1:, 1:] & mask[:-1, :-1]).any()
        or (mask[1:, :-1] & mask[:-1, 1:]).any()
    )


def _plateau_centres(
    label: npt.NDArray[np.int32],
    count: int,
    at_rows: npt.NDArray[np.intp],
    at_columns: npt.NDArray[np.intp],
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """The pixel nearest the centre of each plateau of equal maxima (``bincount``, not
    ``ndimage.center_of_mass``, which is much slower over hundreds of labels)."""
    pixels = np.bincount(label, minlength=count + 1)[1:]
    rows = np.bincount(label, at_rows, minlength=count + 1)[1:] / pixels
    columns = np.bincount(label, at_columns, minlength=count + 1)[1:] / pixels
    return np.rint(rows).astype(np.intp), np.rint(columns).astype(np.intp)


def _vertex(
    before: npt.NDArray[np.float64], at: npt.NDArray[np.float64], after: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Offset (-0.5 to 0.5) of the top of the parabola through three equally spaced values."""
    curvature = before - 2.0 * at + after
    safe = np.where(curvature < 0, curvature, -1.0)
    offset = np.where(curvature < 0, (before - after) / (2.0 * safe), 0.0)
    return np.asarray(np.clip(offset, -0.5, 0.5), dtype=np.float64)
