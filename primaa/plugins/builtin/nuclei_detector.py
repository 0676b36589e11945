"""Nucleus centres in H&E bright-field images, with numpy and scipy only.

The method: hematoxylin density by colour deconvolution, block-averaged so a
nucleus is about 11 px across; a difference of Gaussians tuned to that size
(a blob detector that also splits touching nuclei); local maxima at least
about 0.6 diameters apart; and a threshold with an absolute floor, so glass,
stroma and pure eosin give (almost) nothing, and a part that adapts to the
image's own hematoxylin contrast.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from primaa.plugins.builtin.stain import EOSIN, HEMATOXYLIN, stain_channel, stain_luts

Points = npt.NDArray[np.float64]
FloatImage = npt.NDArray[np.float32]

#: Nucleus diameter, in working pixels, that the filters are tuned for.
WORKING_DIAMETER = 11.0


def _block_mean(image: FloatImage, factor: int) -> FloatImage:
    """Average ``factor`` x ``factor`` blocks; a partial block at the edge is dropped."""
    if factor == 1:
        return image
    h, w = (image.shape[0] // factor) * factor, (image.shape[1] // factor) * factor
    view = image[:h, :w].reshape(h // factor, factor, w // factor, factor)
    out: FloatImage = view.mean(axis=(1, 3), dtype=np.float32)
    return out


def detect_nuclei(
    rgb: npt.NDArray[np.uint8],
    diameter: float = 22.0,
    sensitivity: float = 0.5,
    hematoxylin_vector: Sequence[float] = HEMATOXYLIN,
    eosin_vector: Sequence[float] = EOSIN,
) -> Points:
    """Return nucleus centres as an ``(N, 2)`` array of ``[x, y]`` full-resolution pixels.

    ``diameter`` is the expected nucleus diameter in pixels; ``sensitivity``
    (0 to 1) lowers the detection threshold as it grows.
    """
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise ValueError("expected an RGB image of shape (height, width, 3)")
    factor = max(1, int(diameter / WORKING_DIAMETER + 0.5))
    if rgb.shape[0] < factor or rgb.shape[1] < factor:
        return np.zeros((0, 2))
    d = diameter / factor
    luts = stain_luts(hematoxylin_vector, eosin_vector)
    h = _block_mean(stain_channel(rgb, luts, 0), factor)

    sigma = d / (2.0 * math.sqrt(2.0))
    inner = ndimage.gaussian_filter(h, sigma, mode="reflect", truncate=3.0)
    outer = ndimage.gaussian_filter(h, 1.6 * sigma, mode="reflect", truncate=3.0)
    response = inner - outer

    size = max(3, int(0.6 * d) | 1)
    peaks = ndimage.maximum_filter(response, size=size, mode="nearest") == response
    threshold = 0.05 * (1.5 - sensitivity)
    peaks &= response > threshold
    rows, cols = np.nonzero(peaks)
    xs = (cols + 0.5) * factor - 0.5
    ys = (rows + 0.5) * factor - 0.5
    return np.column_stack([xs, ys]).astype(np.float64)


def tile_margin(diameter: float) -> int:
    """Context each tile needs around its own area for results independent of tiling."""
    return math.ceil(3.0 * diameter) + 8


def detect_nuclei_tiled(
    rgb: npt.NDArray[np.uint8],
    diameter: float = 22.0,
    sensitivity: float = 0.5,
    hematoxylin_vector: Sequence[float] = HEMATOXYLIN,
    eosin_vector: Sequence[float] = EOSIN,
    tile_size: int = 2048,
    progress: Callable[[float], None] | None = None,
) -> Points:
    """Like :func:`detect_nuclei`, in overlapping tiles so memory stays bounded.

    Each tile is processed with a margin of context and keeps only the centres
    inside its own core area, so a nucleus on a border is reported once.
    ``progress`` is called with the fraction done after each tile; whatever it
    raises (e.g. a cancellation) propagates.
    """
    height, width = rgb.shape[:2]
    factor = max(1, int(diameter / WORKING_DIAMETER + 0.5))
    # Cores aligned on the block-averaging grid, so tiling changes nothing but memory.
    step = max(factor, (tile_size // factor) * factor)
    margin = math.ceil(tile_margin(diameter) / factor) * factor
    cores = [(y, x) for y in range(0, height, step) for x in range(0, width, step)]
    found: list[Points] = []
    for done, (y0, x0) in enumerate(cores, start=1):
        y1, x1 = min(y0 + step, height), min(x0 + step, width)
        ty0, tx0 = max(0, y0 - margin), max(0, x0 - margin)
        ty1, tx1 = min(height, y1 + margin), min(width, x1 + margin)
        points = detect_nuclei(
            rgb[ty0:ty1, tx0:tx1], diameter, sensitivity, hematoxylin_vector, eosin_vector
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
