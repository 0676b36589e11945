"""decode_image and image_size: formats, modes, orientation, and refusals before decoding."""

from __future__ import annotations

import io
import re
import struct
import time
import tracemalloc
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from primaa.imaging.decode import ImageDecodeError, decode_image, image_size

LIMIT = 10_000_000
RED = (220, 20, 30)


def _save(tmp_path: Path, im: Image.Image, fmt: str, **kw: Any) -> Path:
    path = tmp_path / "img"
    im.save(path, fmt, **kw)
    return path


def _marked(mode: str = "RGB") -> Image.Image:
    """6x4 image, blue everywhere except a red top-left pixel."""
    im = Image.new("RGB", (6, 4), (0, 0, 255))
    im.putpixel((0, 0), RED)
    if mode == "I;16":
        # Pillow before 10.1 cannot convert RGB to I;16; go through 8-bit grey instead.
        grey = np.asarray(im.convert("L"), dtype=np.uint16) * 257
        return Image.fromarray(grey)
    return im.convert(mode) if mode != "RGB" else im


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_declaring(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(b""))
        + _chunk(b"IEND", b"")
    )


def _jpeg_declaring(width: int, height: int) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app0 + sof + b"\xff\xd9"


def _tiff_declaring(width: int, height: int) -> bytes:
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (262, 3, 1, 1)]
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        ifd += struct.pack("<HHII", tag, kind, count, value)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + b"\x00\x00\x00\x00"


@pytest.mark.parametrize(
    ("fmt", "kw"),
    [
        ("PNG", {}),
        ("TIFF", {}),
        ("TIFF", {"compression": "tiff_lzw"}),
        ("TIFF", {"big_tiff": True}),
        ("JPEG", {"quality": 100, "subsampling": 0}),
    ],
    ids=["png", "tiff", "tiff-lzw", "bigtiff", "jpeg"],
)
def test_formats_decode_to_rgb_top_left_origin(
    tmp_path: Path, fmt: str, kw: dict[str, Any]
) -> None:
    path = _save(tmp_path, _marked(), fmt, **kw)
    array = decode_image(path, max_pixels=LIMIT)
    assert array.shape == (4, 6, 3)
    assert array.dtype == np.uint8
    assert array.flags.writeable
    assert np.abs(array[0, 0].astype(int) - RED).max() <= 8
    assert np.abs(array[3, 5].astype(int) - (0, 0, 255)).max() <= 8
    assert image_size(path) == (6, 4)


@pytest.mark.parametrize("mode", ["L", "P", "1", "CMYK", "I;16", "I"])
def test_modes_convert_to_rgb(tmp_path: Path, mode: str) -> None:
    fmt = "PNG" if mode in ("L", "P", "1", "I;16") else "TIFF"
    path = _save(tmp_path, _marked(mode), fmt)
    array = decode_image(path, max_pixels=LIMIT)
    assert array.shape == (4, 6, 3)
    assert array.dtype == np.uint8


def test_16_bit_grey_scales_to_8_bit(tmp_path: Path) -> None:
    im = Image.fromarray(np.array([[0, 257 * 100, 65535]], dtype=np.uint16))
    path = _save(tmp_path, im, "PNG")
    array = decode_image(path, max_pixels=LIMIT)
    assert array[0, :, 0].tolist() == [0, 100, 255]


def test_cmyk_jpeg(tmp_path: Path) -> None:
    path = _save(tmp_path, Image.new("CMYK", (5, 5), (0, 0, 0, 0)), "JPEG")
    array = decode_image(path, max_pixels=LIMIT)
    assert array.shape == (5, 5, 3)
    assert array.min() >= 250


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_composited_on_white(tmp_path: Path, mode: str) -> None:
    im = Image.new("RGBA", (3, 1), (0, 0, 0, 255))
    im.putpixel((1, 0), (0, 0, 0, 0))
    im.putpixel((2, 0), (0, 0, 0, 128))
    path = _save(tmp_path, im.convert(mode), "PNG")
    array = decode_image(path, max_pixels=LIMIT)
    assert array[0, 0].tolist() == [0, 0, 0]
    assert array[0, 1].tolist() == [255, 255, 255]
    assert 120 <= array[0, 2, 0] <= 135


def test_palette_transparency_is_composited_on_white(tmp_path: Path) -> None:
    im = Image.new("P", (2, 1), 0)
    im.putpalette([0, 0, 0, 10, 20, 30])
    im.putpixel((1, 0), 1)
    path = _save(tmp_path, im, "PNG", transparency=0)
    array = decode_image(path, max_pixels=LIMIT)
    assert array[0].tolist() == [[255, 255, 255], [10, 20, 30]]


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_exif_orientation_is_applied(tmp_path: Path, fmt: str) -> None:
    """Orientation 6 means 'rotate 90 degrees clockwise to display'."""
    exif = Image.Exif()
    exif[0x0112] = 6
    lossless = {"quality": 100, "subsampling": 0} if fmt == "JPEG" else {}
    path = _save(tmp_path, _marked(), fmt, exif=exif.tobytes(), **lossless)
    array = decode_image(path, max_pixels=LIMIT)
    assert array.shape == (6, 4, 3)
    assert np.abs(array[0, 3].astype(int) - RED).max() <= 8
    assert image_size(path) == (6, 4), "image_size reports the stored header, before rotation"


@pytest.mark.parametrize(
    ("data", "width", "height"),
    [
        (_png_declaring(30000, 30000), 30000, 30000),
        (_jpeg_declaring(65000, 65000), 65000, 65000),
        (_tiff_declaring(100_000, 100_000), 100_000, 100_000),
    ],
    ids=["png", "jpeg", "tiff"],
)
def test_huge_declared_size_fails_fast_with_little_memory(
    tmp_path: Path, data: bytes, width: int, height: int
) -> None:
    path = tmp_path / "bomb"
    path.write_bytes(data)
    assert image_size(path) == (width, height)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ImageDecodeError) as info:
            decode_image(path, max_pixels=LIMIT)
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert str(info.value) == (
        f"image is {width}\N{MULTIPLICATION SIGN}{height} = {width * height:,} pixels,"
        " above the limit of 10,000,000 pixels (max_image_pixels)"
    )
    assert elapsed < 0.5
    assert peak < 1_000_000


def test_bomb_message_matches_the_spec(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_declaring(30000, 30000))
    expected = (
        "image is 30000\N{MULTIPLICATION SIGN}30000 = 900,000,000 pixels,"
        " above the limit of 400,000,000 pixels (max_image_pixels)"
    )
    with pytest.raises(ImageDecodeError, match=re.escape(expected)):
        decode_image(path, max_pixels=400_000_000)


def test_our_limit_applies_above_pillows_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pillow's global limit is lifted only for an image we approved, then restored."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    path = _save(tmp_path, Image.new("RGB", (30, 30)), "PNG")
    assert decode_image(path, max_pixels=1000).shape == (30, 30, 3)
    assert Image.MAX_IMAGE_PIXELS == 100
    with pytest.raises(ImageDecodeError, match="above the limit"):
        decode_image(path, max_pixels=899)


def test_truncated_jpeg(tmp_path: Path) -> None:
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageDecodeError, match="image is truncated or corrupt: "):
        decode_image(path, max_pixels=LIMIT)


def test_truncated_png_header(tmp_path: Path) -> None:
    path = tmp_path / "cut.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    with pytest.raises(ImageDecodeError, match="truncated or corrupt"):
        decode_image(path, max_pixels=LIMIT)


def test_corrupt_png_data(tmp_path: Path) -> None:
    data = bytearray(_save(tmp_path, _marked(), "PNG").read_bytes())
    idat = data.index(b"IDAT") + 4
    data[idat : idat + 8] = b"\x00" * 8
    path = tmp_path / "bad.png"
    path.write_bytes(bytes(data))
    with pytest.raises(ImageDecodeError, match="truncated or corrupt"):
        decode_image(path, max_pixels=LIMIT)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"<!DOCTYPE html><html><body>Sign in</body></html>", "looks like an HTML page"),
        (b"\n  <html lang=en>", "looks like an HTML page"),
        (b'{"error": "not found"}', 'content starts with \'{"error"'),
        (b"", "the file is empty"),
        (b"\x00\x01\x02garbage", "not an image"),
    ],
)
def test_non_images(tmp_path: Path, data: bytes, message: str) -> None:
    path = tmp_path / "x"
    path.write_bytes(data)
    with pytest.raises(ImageDecodeError, match="not an image") as info:
        decode_image(path, max_pixels=LIMIT)
    assert message in str(info.value)
    with pytest.raises(ImageDecodeError, match="not an image"):
        image_size(path)


@pytest.mark.parametrize(("fmt", "name"), [("GIF", "GIF"), ("BMP", "BMP"), ("WEBP", "WebP")])
def test_other_formats_refused(tmp_path: Path, fmt: str, name: str) -> None:
    path = _save(tmp_path, _marked(), fmt)
    with pytest.raises(ImageDecodeError) as info:
        decode_image(path, max_pixels=LIMIT)
    assert str(info.value) == f"unsupported image format {name}; expected JPEG, PNG or TIFF"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageDecodeError, match="cannot read the image"):
        decode_image(tmp_path / "nope", max_pixels=LIMIT)


def _on_white(im: Image.Image) -> Image.Image:
    rgba = im.convert("RGBA")
    background = Image.new("RGB", rgba.size, (255, 255, 255))
    background.paste(rgba, mask=rgba.getchannel("A"))
    return background


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA", "L", "P", "I;16"])
def test_an_image_of_many_strips_decodes_as_converted_whole(tmp_path: Path, mode: str) -> None:
    """Rows are converted a strip at a time (bounded memory); the result is the whole
    image's conversion, whatever the mode and wherever the strips meet."""
    height, width = 700, 37
    rows, cols = np.mgrid[0:height, 0:width]
    rgb = np.stack([rows % 256, (cols * 7) % 256, (rows + cols) % 256], axis=-1)
    image = Image.fromarray(rgb.astype(np.uint8))
    if mode in ("RGBA", "LA"):
        image = image.convert(mode[:-1])
        image.putalpha(Image.fromarray(((rows * 3) % 256).astype(np.uint8)))
        expected = np.asarray(_on_white(image))
    elif mode == "I;16":
        image = Image.fromarray((rows * 90 + cols).astype(np.uint16))
        grey = ((np.asarray(image).astype(np.uint32) + 128) // 257).astype(np.uint8)
        expected = np.repeat(grey[..., None], 3, axis=-1)
    else:
        image = image.convert(mode)
        expected = np.asarray(image.convert("RGB"))
    array = decode_image(_save(tmp_path, image, "PNG"), max_pixels=LIMIT)
    assert array.shape == (height, width, 3)
    assert array.flags.writeable
    np.testing.assert_array_equal(array, expected)


def test_a_rotated_image_of_many_strips_is_turned_before_it_is_cut(tmp_path: Path) -> None:
    rows, cols = np.mgrid[0:40, 0:600]
    image = Image.fromarray(np.stack([rows, cols % 256, cols // 256], axis=-1).astype(np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = _save(tmp_path, image, "PNG", exif=exif)
    array = decode_image(path, max_pixels=LIMIT)
    np.testing.assert_array_equal(array, np.asarray(image.transpose(Image.Transpose.ROTATE_270)))
