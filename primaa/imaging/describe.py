"""What an image file is, found by opening it: a slide (read lazily) or a flat image.

Slide or flat is decided by the content, never by the name: what OpenSlide
reads (SVS, NDPI, MRXS, pyramidal or tiled TIFF...) is a slide, read tile by
tile, with no pixel limit; a PNG, a JPEG or a TIFF in strips is flat, decoded
whole, so it must stay within the flat limits (bytes and pixels). Only headers
and one small read are done here, so describing a 20 GB slide costs
milliseconds, and a flat image is sized from its header without being decoded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from primaa.imaging.decode import ImageDecodeError, describe_non_image, image_size, sniff_format
from primaa.imaging.slides.base import SlideError
from primaa.imaging.slides.opener import FLAT_FORMATS, read_head
from primaa.imaging.slides.openslide_backend import OpenSlideSlide, detect_vendor
from primaa.imaging.slides.tiff_extent import TiffExtentError, tiff_data_end

__all__ = ["describe_image", "is_slide"]

#: Side of the probe read at the coarsest level: a few tiles decoded, a damaged codec found.
_PROBE: Final = 256


def is_slide(path: Path) -> bool:
    """Whether OpenSlide reads the file: a slide, held to the slide limits, not the flat ones."""
    return detect_vendor(path) is not None


def describe_image(path: Path, *, max_flat_bytes: int, max_flat_pixels: int) -> dict[str, Any]:
    """The image's ``format``, ``kind`` (``slide`` or ``flat``), level-0 ``width`` and
    ``height``, ``mpp`` (µm per pixel, None when unknown), ``levels`` and ``bytes``.

    Raise :class:`SlideError` (its message safe to show) when the file is empty,
    truncated, corrupt, of a format neither reader knows, or a flat image above
    the flat limits.
    """
    head, size = read_head(path)
    vendor = detect_vendor(path)
    if vendor is not None:
        return _describe_slide(path, vendor, size)
    return _describe_flat(path, head, size, max_flat_bytes, max_flat_pixels)


def _check_tiff(path: Path, what: str) -> None:
    """A TIFF (SVS, NDPI, generic) must hold every strip and tile its directories name."""
    try:
        extent = tiff_data_end(path)
    except TiffExtentError as exc:
        raise SlideError(str(exc).replace("slide", what, 1)) from None
    if extent is not None and extent[0] > extent[1]:
        raise SlideError(
            f"{what} is truncated: its image data runs to byte {extent[0]:,} "
            f"but the file has {extent[1]:,} bytes"
        )


def _describe_slide(path: Path, vendor: str, size: int) -> dict[str, Any]:
    _check_tiff(path, "slide")
    with OpenSlideSlide(path, vendor) as slide:
        coarsest = len(slide.levels) - 1
        level = slide.levels[coarsest]
        width, height = min(level.width, _PROBE), min(level.height, _PROBE)
        left = (level.width - width) // 2 * level.downsample
        top = (level.height - height) // 2 * level.downsample
        slide.read_region(left, top, width, height, level=coarsest)
        return {
            "format": vendor,
            "kind": "slide",
            "width": slide.dimensions[0],
            "height": slide.dimensions[1],
            "mpp": slide.mpp,
            "levels": [
                {"width": lv.width, "height": lv.height, "downsample": round(lv.downsample, 4)}
                for lv in slide.levels
            ],
            "bytes": size,
        }


def _describe_flat(
    path: Path, head: bytes, size: int, max_bytes: int, max_pixels: int
) -> dict[str, Any]:
    kind = sniff_format(head)
    if kind not in FLAT_FORMATS:
        what = (
            describe_non_image(head) if kind == "unknown" else f"unsupported image format ({kind})"
        )
        raise SlideError(
            f"{what}: expected a whole-slide image OpenSlide reads "
            "(SVS, NDPI, MRXS, SCN, BIF, DICOM, pyramidal or tiled TIFF...) "
            "or a PNG, JPEG or TIFF image"
        )
    if size > max_bytes:
        raise SlideError(
            f"a flat {kind} image of {size:,} bytes is larger than the limit for flat images "
            f"({max_bytes:,} bytes, max_image_bytes); whole-slide images (pyramidal or tiled) "
            "have their own limit (max_slide_bytes)"
        )
    if kind == "TIFF":
        _check_tiff(path, "image")
    try:
        width, height = image_size(path)
    except ImageDecodeError as exc:
        raise SlideError(str(exc)) from None
    if width * height > max_pixels:
        raise SlideError(
            f"image is {width}\N{MULTIPLICATION SIGN}{height} = {width * height:,} pixels, "
            f"above the limit of {max_pixels:,} pixels (max_image_pixels) for a flat {kind}, "
            "which is decoded whole; as a pyramidal or tiled TIFF it would be read tile by tile"
        )
    return {
        "format": FLAT_FORMATS[kind],
        "kind": "flat",
        "width": width,
        "height": height,
        "mpp": None,
        "levels": [{"width": width, "height": height, "downsample": 1.0}],
        "bytes": size,
    }
