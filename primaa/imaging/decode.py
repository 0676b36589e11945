"""Decode client images into RGB arrays without trusting their headers.

The format is sniffed and the dimensions are read from the header by this
module before Pillow decodes anything, so an image declaring 30,000 x 30,000
pixels is refused after reading a few bytes, and only the JPEG, PNG and TIFF
parsers of Pillow ever see client data.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Final

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps

__all__ = [
    "ImageDecodeError",
    "decode_image",
    "describe_non_image",
    "image_size",
    "sniff_format",
]

_HEAD_BYTES: Final = 256
_WHITE: Final = (255, 255, 255)
#: Rows converted to RGB at a time: a few megabytes of a large image.
_STRIP_ROWS: Final = 256


class ImageDecodeError(Exception):
    """The file is not an image we can decode; the message is safe to show to clients."""


def sniff_format(head: bytes) -> str:
    """Name the format of a file from its first bytes ("JPEG", "PNG", "TIFF" or other)."""
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head.startswith(b"BM"):
        return "BMP"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    if head.startswith((b"\x00\x00\x00\x0cjP  ", b"\xff\x4f\xff\x51")):
        return "JPEG 2000"
    if head[4:12] in (b"ftypavif", b"ftypheic", b"ftypheix", b"ftypmif1"):
        return "HEIF/AVIF"
    if head[128:132] == b"DICM":
        return "DICOM"
    if head.startswith(b"%PDF"):
        return "PDF"
    return "unknown"


def describe_non_image(head: bytes) -> str:
    if not head:
        return "not an image (the file is empty)"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        kind = "an HTML page"
    elif text.startswith(b"<?xml") or text.startswith(b"<svg"):
        kind = "XML or SVG"
    elif text.startswith((b"{", b"[")):
        kind = "JSON?"
    elif head.startswith(b"PK\x03\x04"):
        kind = "a ZIP archive"
    elif head.startswith(b"\x1f\x8b"):
        kind = "gzip data"
    else:
        kind = ""
    sample = head[:24].decode("ascii", "backslashreplace")
    suffix = f": looks like {kind}" if kind else ""
    return f"not an image (content starts with {sample!r}{suffix})"


def _unsupported(fmt: str, head: bytes) -> ImageDecodeError:
    if fmt == "unknown":
        return ImageDecodeError(describe_non_image(head))
    return ImageDecodeError(f"unsupported image format {fmt}; expected JPEG, PNG or TIFF")


def _corrupt(detail: str) -> ImageDecodeError:
    return ImageDecodeError(f"image is truncated or corrupt: {detail}")


def _read_exact(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise _corrupt("the header ends early")
    return data


def _png_size(f: BinaryIO) -> tuple[int, int]:
    f.seek(8)
    length, kind, width, height = struct.unpack(">I4sII", _read_exact(f, 16))
    if kind != b"IHDR" or length < 8:
        raise _corrupt("PNG does not start with an IHDR chunk")
    return width, height


_JPEG_SOF: Final = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE: Final = frozenset(range(0xD0, 0xD8)) | {0x01}


def _jpeg_size(f: BinaryIO) -> tuple[int, int]:
    f.seek(2)
    while True:
        byte = _read_exact(f, 1)
        if byte != b"\xff":
            raise _corrupt("JPEG marker expected")
        marker = _read_exact(f, 1)[0]
        while marker == 0xFF:
            marker = _read_exact(f, 1)[0]
        if marker in _JPEG_STANDALONE:
            continue
        if marker in (0xD9, 0xDA):
            raise _corrupt("JPEG has no frame header")
        (length,) = struct.unpack(">H", _read_exact(f, 2))
        if length < 2:
            raise _corrupt("JPEG segment length is invalid")
        if marker in _JPEG_SOF:
            _precision, height, width = struct.unpack(">BHH", _read_exact(f, 5))
            if width == 0 or height == 0:
                raise _corrupt("JPEG frame declares a zero dimension")
            return width, height
        f.seek(length - 2, 1)


_TIFF_TYPES: Final = {3: ("H", 2), 4: ("I", 4), 16: ("Q", 8)}


def _tiff_size(f: BinaryIO) -> tuple[int, int]:
    f.seek(0)
    order = ">" if _read_exact(f, 2) == b"MM" else "<"
    (magic,) = struct.unpack(order + "H", _read_exact(f, 2))
    if magic == 42:
        (ifd,) = struct.unpack(order + "I", _read_exact(f, 4))
        count_fmt, entry_fmt, entry_size, inline = "H", "HHI", 12, 4
    else:
        offset_size, _zero, ifd = struct.unpack(order + "HHQ", _read_exact(f, 12))
        if offset_size != 8:
            raise _corrupt("BigTIFF header is invalid")
        count_fmt, entry_fmt, entry_size, inline = "Q", "HHQ", 20, 8
    f.seek(ifd)
    (count,) = struct.unpack(order + count_fmt, _read_exact(f, struct.calcsize(count_fmt)))
    dims: dict[int, int] = {}
    head_size = struct.calcsize(order + entry_fmt)
    for _ in range(min(count, 4096)):
        entry = _read_exact(f, entry_size)
        tag, kind, _n = struct.unpack(order + entry_fmt, entry[:head_size])
        if tag in (256, 257) and kind in _TIFF_TYPES:
            code, size = _TIFF_TYPES[kind]
            if size <= inline:
                (dims[tag],) = struct.unpack(order + code, entry[head_size : head_size + size])
        if len(dims) == 2:
            return dims[256], dims[257]
    raise _corrupt("TIFF has no image width and length")


def _header_size(f: BinaryIO, fmt: str) -> tuple[int, int]:
    if fmt == "PNG":
        return _png_size(f)
    if fmt == "JPEG":
        return _jpeg_size(f)
    return _tiff_size(f)


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file header, without decoding; before EXIF rotation."""
    with path.open("rb") as f:
        head = f.read(_HEAD_BYTES)
        fmt = sniff_format(head)
        if fmt not in ("JPEG", "PNG", "TIFF"):
            raise _unsupported(fmt, head)
        return _header_size(f, fmt)


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageDecodeError(
            f"image is {width}\N{MULTIPLICATION SIGN}{height} = {width * height:,} pixels, "
            f"above the limit of {max_pixels:,} pixels (max_image_pixels)"
        )


def _to_rgb(im: Image.Image) -> Image.Image:
    """Convert any mode we accept to 8-bit RGB; transparency is flattened on white."""
    if im.mode == "RGB":
        return im
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGB", rgba.size, _WHITE)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if im.mode.startswith("I;16") or im.mode == "I":
        wide = np.clip(np.asarray(im), 0, 65535).astype(np.uint32)
        scaled = ((wide + 128) // 257).astype(np.uint8)
        return Image.fromarray(scaled).convert("RGB")
    if im.mode in ("1", "L", "P", "CMYK", "YCbCr"):
        return im.convert("RGB")
    raise ImageDecodeError(f"unsupported pixel mode {im.mode}")


def _rgb_array(im: Image.Image) -> npt.NDArray[np.uint8]:
    """The image as a new (writable: plugins may work in place) RGB array, converted a
    strip of rows at a time, every conversion being per pixel.

    Pillow holds an RGB image in 4 bytes a pixel; ``np.array(image)`` adds a bytes copy
    and an array copy of it, and a transparent one was converted twice more first:
    a 64 MP PNG peaked at 4.7x (RGB) and 5.7x (RGBA) its decoded size, against 2.5x
    now (``python -m bench.decode_memory --base DIR``).
    """
    width, height = im.size
    out = np.empty((height, width, 3), np.uint8)
    for top in range(0, height, _STRIP_ROWS):
        strip = _to_rgb(im.crop((0, top, width, min(top + _STRIP_ROWS, height))))
        out[top : top + strip.height] = np.asarray(strip)
    return out


_limit_lock = threading.Lock()


@contextmanager
def _pillow_limit(pixels: int) -> Iterator[None]:
    """Let Pillow open an image that our own `max_pixels` check has already approved.

    Pillow warns above ``Image.MAX_IMAGE_PIXELS`` and refuses above twice that
    (179 MP by default), which would silently cap an operator's larger
    ``max_pixels``. For such an image only, the global is raised to exactly its
    pixel count while it is opened and loaded, under a lock, and then restored;
    a limit of None (protection off) is left alone.
    """
    current = Image.MAX_IMAGE_PIXELS
    if current is None or pixels <= current:
        yield
        return
    with _limit_lock:
        saved = Image.MAX_IMAGE_PIXELS
        if saved is not None:
            Image.MAX_IMAGE_PIXELS = max(saved, pixels)
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def decode_image(path: Path, *, max_pixels: int) -> npt.NDArray[np.uint8]:
    """Decode a JPEG, PNG or TIFF file into an HxWx3 uint8 RGB array, origin top-left.

    The pixel count is checked from the header before Pillow decodes anything,
    so `max_pixels` is the limit that applies, also above Pillow's default.
    """
    try:
        f = path.open("rb")
    except OSError as exc:
        raise ImageDecodeError(f"cannot read the image: {exc.strerror}") from None
    with f:
        head = f.read(_HEAD_BYTES)
        fmt = sniff_format(head)
        if fmt not in ("JPEG", "PNG", "TIFF"):
            raise _unsupported(fmt, head)
        width, height = _header_size(f, fmt)
        _check_pixels(width, height, max_pixels)
        f.seek(0)
        try:
            with _pillow_limit(width * height):
                opened = Image.open(f, formats=[fmt])
                # The header we read and the frame Pillow decodes could differ; trust Pillow.
                _check_pixels(opened.width, opened.height, max_pixels)
                opened.load()
                # Inside the lifted limit too: Pillow 10 checks the size of a crop (a strip).
                ImageOps.exif_transpose(opened, in_place=True)
                array = _rgb_array(opened)
        except ImageDecodeError:
            raise
        except Image.DecompressionBombError as exc:
            raise ImageDecodeError(
                f"image refused by Pillow's decompression-bomb check: {exc}"
            ) from None
        except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error) as exc:
            raise _corrupt(str(exc) or type(exc).__name__) from None
    if array.ndim != 3 or array.shape[2] != 3:
        raise ImageDecodeError(f"unexpected decoded shape {array.shape}")
    return array
