"""Open a slide with the backend that reads it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from primaa.imaging.decode import sniff_format
from primaa.imaging.slides.base import Slide, SlideError
from primaa.imaging.slides.flat import FlatSlide
from primaa.imaging.slides.openslide_backend import OpenSlideSlide, detect_vendor

__all__ = ["DEFAULT_MAX_FLAT_PIXELS", "FLAT_FORMATS", "open_slide", "read_head"]

#: Flat images are decoded whole, so their size is limited (300 MP is 900 MB of RGB).
DEFAULT_MAX_FLAT_PIXELS: Final = 300_000_000

#: What :func:`primaa.imaging.decode.sniff_format` finds, for the flat formats read whole.
FLAT_FORMATS: Final = {"JPEG": "jpeg", "PNG": "png", "TIFF": "tiff"}
#: Bytes read to tell a file's format.
HEAD_BYTES: Final = 256


def read_head(path: Path) -> tuple[bytes, int]:
    """The first bytes of an image file, enough to tell its format, and its size in bytes;
    :class:`SlideError` (safe to show) when it cannot be read or is empty."""
    try:
        with path.open("rb") as f:
            head = f.read(HEAD_BYTES)
            size = f.seek(0, os.SEEK_END)
    except OSError as exc:
        raise SlideError(f"cannot read the image: {exc.strerror}") from None
    if not head:
        raise SlideError("the image file is empty (0 bytes)")
    return head, size


def open_slide(
    path: str | os.PathLike[str], *, max_flat_pixels: int = DEFAULT_MAX_FLAT_PIXELS
) -> Slide:
    """Open ``path`` for reading: through OpenSlide when it reads the file, else as a flat image.

    OpenSlide goes first, so a tiled TIFF is read lazily; a PNG, a JPEG, or a TIFF
    in strips is decoded once, within ``max_flat_pixels``. Anything else, and any
    file that is damaged, raises :class:`SlideError`.
    """
    file = Path(path)
    head, _ = read_head(file)
    vendor = detect_vendor(file)
    if vendor is not None:
        return OpenSlideSlide(file, vendor)
    kind = sniff_format(head)
    if kind not in FLAT_FORMATS:
        detail = "" if kind == "unknown" else f" ({kind})"
        raise SlideError(
            f"unsupported slide format{detail}: expected a whole-slide image OpenSlide reads "
            "(SVS, NDPI, MRXS, SCN, pyramidal TIFF...) or a PNG, JPEG or TIFF image"
        )
    return FlatSlide(file, FLAT_FORMATS[kind], max_pixels=max_flat_pixels)
