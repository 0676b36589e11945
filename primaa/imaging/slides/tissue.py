"""Where the tissue is, at low resolution, so only tissue is tiled.

The mask is read at about 8 µm per pixel from the pyramid level closest to it:
a 100,000-pixel-wide slide at 0.25 µm/px gives a 3,125-pixel-wide mask, read
in bounded blocks. The score is the ``roi_detection`` algorithm's: tissue
absorbs light in at least one channel and glass almost none, so it is the
largest per-channel optical density measured against the brightest glass. The
threshold is simpler than that algorithm's glass-peak fit: Otsu's, clamped so
that noise on pure glass is never tissue and noisy glass cannot hide pale
tissue. A tiling mask must not miss tissue, so it is grown by a margin; a few
extra tiles cost little.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Final

import cv2
import numpy as np
import numpy.typing as npt

from primaa.imaging.slides.base import RGB, Slide

__all__ = ["TISSUE_MPP", "TissueMask", "tissue_mask", "tissue_pixels"]

#: The resolution of the mask, in micrometres per pixel.
TISSUE_MPP: Final = 8.0
#: Without a stated resolution, the mask's longer side is about this many pixels.
_NO_MPP_SIDE: Final = 2048
#: A level whose downsample is within this factor of the target is read as it is.
_SNAP: Final = 1.5

#: Optical density of each uint8 intensity, so the image never becomes float.
_OD_LUT: Final = (-np.log10((np.arange(256, dtype=np.float32) + 1.0) / 256.0)).astype(np.float32)
#: The glass level of each channel: this percentile of the image, never darker than _MIN_WHITE.
_WHITE_PERCENTILE: Final = 99.5
_MIN_WHITE: Final = 225
#: Darker than this in every channel: scanner padding, not stain.
_BLACK: Final = 20
#: Bounds on the optical-density threshold (Otsu's is clamped between them).
_FLOOR: Final = 0.05
_CEILING: Final = 0.12


@dataclasses.dataclass(frozen=True)
class TissueMask:
    """A boolean mask of tissue; pixel (i, j) covers level 0 from ``j * downsample``."""

    mask: npt.NDArray[np.bool_]
    downsample: float

    @property
    def fraction(self) -> float:
        """Share of the mask's pixels that are tissue."""
        return float(self.mask.mean()) if self.mask.size else 0.0

    def any_in(self, x0: float, y0: float, x1: float, y1: float) -> bool:
        """Whether any mask pixel touching the level-0 rectangle [x0, x1) x [y0, y1) is tissue."""
        j0 = max(0, math.floor(x0 / self.downsample))
        i0 = max(0, math.floor(y0 / self.downsample))
        j1 = math.ceil(x1 / self.downsample)
        i1 = math.ceil(y1 / self.downsample)
        return bool(self.mask[i0:i1, j0:j1].any())


def mask_downsample(slide: Slide, mpp: float = TISSUE_MPP) -> float:
    """Level-0 pixels per mask pixel: about ``mpp``, snapped to a pyramid level close to it."""
    if slide.mpp is None:
        target = max(1.0, max(slide.dimensions) / _NO_MPP_SIDE)
    else:
        target = max(1.0, mpp / slide.mpp)
    closest = slide.levels[slide.nearest_level(target)]
    if max(closest.downsample / target, target / closest.downsample) <= _SNAP:
        return closest.downsample
    return target


def tissue_mask(slide: Slide, *, mpp: float = TISSUE_MPP, margin: int = 1) -> TissueMask:
    """The slide's tissue at about ``mpp`` µm per pixel, grown by ``margin`` mask pixels."""
    downsample = mask_downsample(slide, mpp)
    width, height = slide.dimensions
    small = slide.read_region(
        0,
        0,
        max(1, math.ceil(width / downsample)),
        max(1, math.ceil(height / downsample)),
        downsample=downsample,
    )
    return TissueMask(tissue_pixels(small, margin=margin), downsample)


def tissue_pixels(image: RGB, *, margin: int = 1) -> npt.NDArray[np.bool_]:
    """Tissue pixels of a low-resolution RGB image: specks removed, grown by ``margin``."""
    score = _max_optical_density(image)
    score[image.max(axis=2) < _BLACK] = 0.0
    score = np.asarray(cv2.medianBlur(score, 3), np.float32)
    threshold = min(max(_otsu(score), _FLOOR), _CEILING)
    mask = (score > threshold).astype(np.uint8)
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    mask = np.asarray(cv2.morphologyEx(mask, cv2.MORPH_OPEN, disk), np.uint8)
    if margin > 0:
        grow = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1, 2 * margin + 1))
        mask = np.asarray(cv2.dilate(mask, grow), np.uint8)
    result: npt.NDArray[np.bool_] = mask.astype(bool)
    return result


def _max_optical_density(image: RGB) -> npt.NDArray[np.float32]:
    score = np.zeros(image.shape[:2], np.float32)
    for channel in range(3):
        plane = image[..., channel]
        counts = np.cumsum(np.bincount(plane.ravel(), minlength=256))
        white = int(np.searchsorted(counts, counts[-1] * _WHITE_PERCENTILE / 100.0))
        lut = np.maximum(_OD_LUT - _OD_LUT[max(white, _MIN_WHITE)], np.float32(0.0))
        np.maximum(score, lut[plane], out=score)
    return score


def _otsu(score: npt.NDArray[np.float32], bins: int = 256, top: float = 1.0) -> float:
    """Otsu's threshold of the score over [0, top): the split that best separates two classes."""
    # Dark stain above ``top`` counts in the last bin rather than not at all.
    hist, edges = np.histogram(np.minimum(score, top * 0.999), bins=bins, range=(0.0, top))
    weights = hist.astype(np.float64)
    centres = (edges[:-1] + edges[1:]) / 2.0
    below = np.cumsum(weights)
    total = below[-1]
    if total == 0:
        return top
    above = total - below
    sum_below = np.cumsum(weights * centres)
    mean_below = np.divide(sum_below, below, out=np.zeros_like(sum_below), where=below > 0)
    mean_above = np.divide(
        sum_below[-1] - sum_below, above, out=np.zeros_like(sum_below), where=above > 0
    )
    between = below * above * (mean_below - mean_above) ** 2
    return float(edges[int(np.argmax(between)) + 1])
