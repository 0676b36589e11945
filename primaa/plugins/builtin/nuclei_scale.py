"""Typical nucleus diameter of an H&E image, estimated from its pixels.

Linear granulometry (the stereologist's intercept method): along rows and
columns of the hematoxylin foreground, every run of foreground pixels is a chord
through a nucleus. For disks of diameter D, the length-weighted median chord is a
fixed fraction of D, whatever their number or arrangement; weighting by length
makes specks of chromatin count little, and the median ignores a minority of long
chords through clumps (an image made mostly of clumps is recognised and left to the
prior). Nothing here has a size in pixels except the reduction, so the
estimate follows a rescaled image (a 1.4x upscale gives about 1.4x the diameter).

The estimate is pooled over windows spread across the image, so one value serves
every tile of a slide and detections do not change scale from tile to tile.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from primaa.plugins.builtin.nuclei_detector import (
    FloatImage,
    fill_small_holes,
    otsu_threshold,
    working_factor,
)
from primaa.plugins.builtin.stain import hematoxylin_reduced

#: Nucleus diameter per length-weighted median chord, calibrated on the brain dev set
#: (median equivalent diameter 22 px, median chord 22.9 px; drawn disks give 1.09).
CHORD_TO_DIAMETER = 22.0 / 22.9
#: Foreground a fifth above Otsu's level, where clumps of nuclei start to split: when the
#: estimate there is over 1.4 times smaller than at Otsu's level, chords run through clumps,
#: not nuclei, and the estimate is not used (brain dev tiles: 1.08-1.24; multi-organ tiles:
#: 1.10-1.35, but 1.69 on a colon tile of crowded glands that read as 63 px nuclei).
STRICTER, MAX_CLUMPING = 1.2, 1.4
#: Foreground threshold floor in hematoxylin OD, as for detection: glass and eosin give no chords.
MIN_THRESHOLD = 0.25
#: Fewer foreground pixels than this (in reduced pixels) is no evidence of nuclei.
MIN_FOREGROUND = 400
#: Relative difference (log) between estimate and prior below which the prior is kept.
DEAD_ZONE = 0.15
#: Side of the sample windows on large images, and how many at most.
WINDOW, MAX_WINDOWS = 512, 16


def _chords(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.float64]:
    """Lengths of the runs of foreground along every row of ``mask``."""
    padded = np.zeros((mask.shape[0], mask.shape[1] + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    steps = np.diff(padded, axis=1).ravel()
    starts = np.flatnonzero(steps == 1)
    ends = np.flatnonzero(steps == -1)
    return (ends - starts).astype(np.float64)


def _smooth(image: FloatImage) -> FloatImage:
    """Binomial [1, 2, 1] / 4 smoothing twice along each axis (about a Gaussian of sigma 1)."""
    out = np.pad(image, 2, mode="edge")
    for axis in (0, 1):
        for _ in range(2):
            a = np.moveaxis(out, axis, 0)
            a[1:-1] = 0.25 * (a[:-2] + a[2:]) + 0.5 * a[1:-1]
    return out[2:-2, 2:-2]


def window_chords(
    hema: FloatImage, factor: int, max_hole: float
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Chord lengths (full-resolution pixels) through the foreground of reduced hematoxylin,
    at Otsu's level and at the stricter one.

    Holes up to ``max_hole`` reduced pixels are filled first, as detection does, so
    that a vesicular nucleus (dark rim, pale centre) gives one chord, not two.
    """
    empty = (np.zeros(0), np.zeros(0))
    if hema.shape[0] < 8 or hema.shape[1] < 8:
        return empty
    smooth = _smooth(hema)
    otsu = otsu_threshold(smooth[::2, ::2])
    found = []
    for level in (1.0, STRICTER):
        mask = smooth > max(level * otsu, MIN_THRESHOLD)
        if np.count_nonzero(mask) < MIN_FOREGROUND:
            return empty
        fill_small_holes(mask, max_hole)
        # Every other row and column: chords on a subset of lines are as unbiased, at half the cost.
        lengths = np.concatenate([_chords(mask[::2]), _chords(mask.T[::2])])
        found.append(lengths[lengths > 1] * factor)
    return found[0], found[1]


def _central_chord(lengths: npt.NDArray[np.float64]) -> float:
    """Length-weighted mean of the chords between 40 % and 60 % of the length mass: the
    weighted median, smoothed so that it is not a multiple of the reduction factor."""
    ordered = np.sort(lengths)
    mass = np.cumsum(ordered)
    low, high = np.searchsorted(mass, [0.4 * mass[-1], 0.6 * mass[-1]])
    central = ordered[low : high + 1]
    return float(np.sum(central**2) / np.sum(central))


def _windows(height: int, width: int) -> list[tuple[int, int, int, int]]:
    """Up to :data:`MAX_WINDOWS` windows on a regular grid, or the whole image if small."""
    if height * width <= 4 * WINDOW * WINDOW:
        return [(0, 0, height, width)]
    per_side = math.isqrt(MAX_WINDOWS)
    ys = np.linspace(0, max(0, height - WINDOW), per_side).astype(int)
    xs = np.linspace(0, max(0, width - WINDOW), per_side).astype(int)
    return [
        (int(y), int(x), min(height, int(y) + WINDOW), min(width, int(x) + WINDOW))
        for y in sorted(set(ys))
        for x in sorted(set(xs))
    ]


class Estimate(NamedTuple):
    """An estimated diameter (``None``: no nuclei to see, or only clumps), the reduction
    used, and the whole image's reduced hematoxylin when computed at once, for reuse."""

    diameter: float | None
    factor: int
    hematoxylin: FloatImage | None


def estimate_diameter(
    rgb: npt.NDArray[np.uint8],
    prior: float,
    bounds: tuple[float, float],
    hematoxylin_vector: Sequence[float],
    eosin_vector: Sequence[float],
) -> Estimate:
    """Typical nucleus diameter in pixels within ``bounds``; ``None`` when unreliable.

    The image is reduced as detection would reduce it at the ``prior`` diameter
    (about 11 px across), which also sets how much chromatin texture is smoothed.
    """
    low, high = bounds
    factor = working_factor(prior)
    at_otsu, stricter, whole = [], [], None
    for y0, x0, y1, x1 in _windows(*rgb.shape[:2]):
        hema = hematoxylin_reduced(rgb[y0:y1, x0:x1], factor, hematoxylin_vector, eosin_vector)
        chords = window_chords(hema, factor, math.pi * (prior / factor / 2) ** 2)
        at_otsu.append(chords[0])
        stricter.append(chords[1])
        if (y1 - y0, x1 - x0) == rgb.shape[:2]:
            whole = hema
    lengths, strict_lengths = np.concatenate(at_otsu), np.concatenate(stricter)
    if len(lengths) < 20 or len(strict_lengths) < 20:
        return Estimate(None, factor, whole)
    median = _central_chord(lengths)
    if median > MAX_CLUMPING * _central_chord(strict_lengths):
        return Estimate(None, factor, whole)
    return Estimate(float(np.clip(median * CHORD_TO_DIAMETER, low, high)), factor, whole)


def choose_diameter(
    rgb: npt.NDArray[np.uint8],
    prior: float,
    bounds: tuple[float, float],
    hematoxylin_vector: Sequence[float],
    eosin_vector: Sequence[float],
) -> Estimate:
    """The nucleus diameter to detect at: the estimate, or ``prior`` when they hardly differ.

    On images of one kind the estimate scatters by about 10 % around the true
    median, and the detector loses F1 when its scale is off, so an estimate
    within :data:`DEAD_ZONE` of the prior is taken as the prior; a clearly
    different one (another magnification, an organ with bigger nuclei) is used.
    """
    found = estimate_diameter(rgb, prior, bounds, hematoxylin_vector, eosin_vector)
    if found.diameter is None or abs(math.log(found.diameter / prior)) <= DEAD_ZONE:
        return found._replace(diameter=prior)
    return found
