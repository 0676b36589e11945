"""A flat PNG, JPEG or TIFF as a one-level slide: the degenerate case.

The image is decoded once, when opened, by :func:`primaa.imaging.decode_image`
and its pixel limit; reads are then slices of that array. A flat file states no
resolution we trust, so ``mpp`` is None.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from primaa.imaging.decode import ImageDecodeError, decode_image
from primaa.imaging.slides.base import RGB, Level, Slide, SlideError

__all__ = ["FlatSlide"]

_WHITE = 255


class FlatSlide(Slide):
    """A decoded image with a single level."""

    def __init__(self, path: Path, format: str, *, max_pixels: int):
        try:
            pixels = decode_image(path, max_pixels=max_pixels)
        except ImageDecodeError as exc:
            raise SlideError(str(exc)) from None
        self._pixels: RGB | None = pixels
        height, width = pixels.shape[:2]
        super().__init__(path=path, format=format, levels=(Level(width, height, 1.0),), mpp=None)

    def close(self) -> None:
        self._pixels = None

    def _read_level(self, index: int, x: int, y: int, width: int, height: int) -> RGB:
        if self._pixels is None:
            raise SlideError("the slide is closed")
        source = self._pixels
        out = np.full((height, width, 3), _WHITE, np.uint8)
        left, top = max(x, 0), max(y, 0)
        right = min(x + width, source.shape[1])
        bottom = min(y + height, source.shape[0])
        if left < right and top < bottom:
            out[top - y : bottom - y, left - x : right - x] = source[top:bottom, left:right]
        return out
