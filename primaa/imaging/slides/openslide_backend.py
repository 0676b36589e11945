"""Slides OpenSlide reads: SVS, NDPI, MRXS, SCN, pyramidal and tiled TIFF...

OpenSlide decodes only the tiles a read touches, so memory follows the read,
never the slide. The library comes from the ``openslide-bin`` wheel, so no
system package is needed.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Final

import numpy as np
import openslide

from primaa.imaging.slides.base import RGB, Level, Slide, SlideError, composite_on_white

__all__ = ["OpenSlideSlide", "detect_vendor"]

#: Coarser than this (µm per pixel) is not a microscope's resolution but a writer's
#: default: 72, 96 or 300 dpi, or 1 pixel per millimetre, are written by software
#: that did not know, and OpenSlide reports them as they are.
MAX_PLAUSIBLE_MPP: Final = 50.0


def detect_vendor(path: Path) -> str | None:
    """OpenSlide's name for the file's format, or None when OpenSlide cannot read it."""
    try:
        return openslide.OpenSlide.detect_format(path)
    except openslide.OpenSlideError:
        return None


def _mpp(handle: openslide.OpenSlide) -> float | None:
    values = []
    for key in (openslide.PROPERTY_NAME_MPP_X, openslide.PROPERTY_NAME_MPP_Y):
        try:
            value = float(handle.properties[key])
        except (KeyError, ValueError, UnicodeDecodeError):
            # Absent, not a number, or not text at all in a damaged file.
            continue
        if math.isfinite(value) and 0 < value <= MAX_PLAUSIBLE_MPP:
            values.append(value)
    return sum(values) / len(values) if values else None


def _safe(exc: Exception, path: Path) -> str:
    """OpenSlide's message without the server's directory names."""
    return (str(exc) or type(exc).__name__).replace(str(path), path.name)


class OpenSlideSlide(Slide):
    """A slide read through OpenSlide, one tile at a time."""

    def __init__(self, path: Path, vendor: str):
        try:
            handle = openslide.OpenSlide(path)
        except openslide.OpenSlideUnsupportedFormatError:
            raise SlideError(f"unsupported or damaged {vendor} slide") from None
        except openslide.OpenSlideError as exc:
            raise SlideError(f"slide is truncated or corrupt: {_safe(exc, path)}") from None
        self._handle = handle
        self._closed = False
        try:
            levels = tuple(
                Level(int(w), int(h), float(d))
                for (w, h), d in zip(handle.level_dimensions, handle.level_downsamples, strict=True)
            )
            mpp = _mpp(handle)
        except openslide.OpenSlideError as exc:
            handle.close()
            raise SlideError(f"slide is truncated or corrupt: {_safe(exc, path)}") from None
        super().__init__(path=path, format=vendor, levels=levels, mpp=mpp)

    def close(self) -> None:
        self._closed = True
        self._handle.close()

    def _read_level(self, index: int, x: int, y: int, width: int, height: int) -> RGB:
        if self._closed:
            raise SlideError("the slide is closed")
        scale = self.levels[index].downsample
        location = (round(x * scale), round(y * scale))
        try:
            image = self._handle.read_region(location, index, (width, height))
        except openslide.OpenSlideError as exc:
            # OpenSlide keeps a handle that failed in error: every later read fails too.
            raise SlideError(f"slide is truncated or corrupt: {_safe(exc, self.path)}") from None
        with image:
            rgba = np.asarray(image, dtype=np.uint8)
        return composite_on_white(rgba)
