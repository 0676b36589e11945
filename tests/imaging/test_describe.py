"""What an image file is, by opening it: slides, flat images, and files that lie or are broken."""

from __future__ import annotations

import io
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pyvips
from PIL import Image

from primaa.imaging.describe import describe_image, is_slide
from primaa.imaging.slides import SlideError
from primaa.imaging.slides.tiff_extent import tiff_data_end

SVS = Path(__file__).resolve().parents[1] / "data" / "CMU-1-Small-Region.svs"
TIMES = "\N{MULTIPLICATION SIGN}"
LIMITS: dict[str, Any] = {"max_flat_bytes": 1 << 30, "max_flat_pixels": 400_000_000}


def describe(path: Path, **limits: int) -> dict[str, Any]:
    return describe_image(path, **{**LIMITS, **limits})


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 120, 180)).save(out, format="PNG")
    return out.getvalue()


def tiled_tiff(path: Path, size: int = 512, *, mpp: float | None = None) -> Path:
    image = pyvips.Image.black(size, size, bands=3) + 200
    options: dict[str, Any] = {}
    if mpp is not None:
        # libvips takes pixels per millimetre and writes them in the unit asked for.
        options.update(xres=1000.0 / mpp, yres=1000.0 / mpp, resunit="cm")
    image.tiffsave(
        str(path), tile=True, tile_width=256, tile_height=256, compression="jpeg", **options
    )
    return path


def test_the_cmu_svs_is_an_aperio_slide_at_half_a_micron() -> None:
    info = describe(SVS)
    assert info["format"] == "aperio"
    assert info["kind"] == "slide"
    assert (info["width"], info["height"]) == (2220, 2967)
    assert info["mpp"] == pytest.approx(0.499, abs=1e-3)
    assert info["levels"] == [{"width": 2220, "height": 2967, "downsample": 1.0}]
    assert info["bytes"] == SVS.stat().st_size
    assert is_slide(SVS)


def test_a_slide_is_a_slide_whatever_its_name(tmp_path: Path) -> None:
    disguised = tmp_path / "photo.png"
    disguised.write_bytes(SVS.read_bytes())
    assert describe(disguised)["format"] == "aperio"


def test_a_tiled_tiff_is_a_slide_above_the_flat_limits(tmp_path: Path) -> None:
    path = tiled_tiff(tmp_path / "tiles.tif", 1024, mpp=0.25)
    info = describe(path, max_flat_bytes=100, max_flat_pixels=1000)
    assert info["kind"] == "slide"
    assert info["format"] == "generic-tiff"
    assert (info["width"], info["height"]) == (1024, 1024)
    assert info["mpp"] == pytest.approx(0.25, rel=1e-3)


def test_a_flat_png_has_its_size_and_no_mpp(tmp_path: Path) -> None:
    path = tmp_path / "tile.png"
    path.write_bytes(png(160, 120))
    info = describe(path)
    assert info == {
        "format": "png",
        "kind": "flat",
        "width": 160,
        "height": 120,
        "mpp": None,
        "levels": [{"width": 160, "height": 120, "downsample": 1.0}],
        "bytes": path.stat().st_size,
    }
    assert not is_slide(path)


def test_a_flat_image_is_held_to_the_flat_limits(tmp_path: Path) -> None:
    path = tmp_path / "tile.png"
    path.write_bytes(png(160, 120))
    with pytest.raises(
        SlideError, match=r"larger than the limit for flat images .*max_image_bytes"
    ):
        describe(path, max_flat_bytes=100)
    with pytest.raises(SlideError, match=f"160{TIMES}120 = 19,200 pixels, above the limit"):
        describe(path, max_flat_pixels=10_000)


def test_an_empty_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.svs"
    path.write_bytes(b"")
    with pytest.raises(SlideError, match="empty"):
        describe(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"GIF89a" + b"\x00" * 100, r"unsupported image format \(GIF\)"),
        (b"%PDF-1.7\n" + b"\x00" * 100, r"unsupported image format \(PDF\)"),
        (b"hello, this is not an image at all", r"not an image \(content starts with 'hello"),
        (b"<!doctype html><html>", "looks like an HTML page"),
    ],
)
def test_unsupported_formats_say_what_would_do(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "slide.svs"
    path.write_bytes(content)
    with pytest.raises(SlideError, match=message):
        describe(path)


@pytest.mark.parametrize("keep", [0.5, 0.99, 0.01])
def test_a_truncated_svs_is_found_before_any_tile_is_read(tmp_path: Path, keep: float) -> None:
    data = SVS.read_bytes()
    path = tmp_path / "cut.svs"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(SlideError, match="truncated"):
        describe(path)


def test_a_corrupt_svs_fails_with_the_codec_s_complaint(tmp_path: Path) -> None:
    data = bytearray(SVS.read_bytes())
    n = len(data)
    noise = np.random.default_rng(0).integers(0, 256, n // 2, dtype=np.uint8).tobytes()
    data[n // 10 : n // 10 + len(noise)] = noise
    path = tmp_path / "noise.svs"
    path.write_bytes(bytes(data))
    with pytest.raises(SlideError, match="corrupt"):
        describe(path)


def _patch_size(path: Path, width: int, height: int) -> None:
    """Rewrite ImageWidth and ImageLength of the first directory of a classic TIFF."""
    data = bytearray(path.read_bytes())
    order = "<" if data[:2] == b"II" else ">"
    (ifd,) = struct.unpack(order + "I", data[4:8])
    (count,) = struct.unpack(order + "H", data[ifd : ifd + 2])
    for index in range(count):
        at = ifd + 2 + 12 * index
        tag, kind = struct.unpack(order + "HH", data[at : at + 4])
        if tag in (256, 257):
            value = width if tag == 256 else height
            code = "H" if kind == 3 else "I"
            data[at + 8 : at + 8 + struct.calcsize(code)] = struct.pack(order + code, value)
    path.write_bytes(bytes(data))


def test_a_tiled_tiff_that_lies_about_its_size_is_refused(tmp_path: Path) -> None:
    path = tiled_tiff(tmp_path / "liar.tif")
    assert describe(path)["width"] == 512
    _patch_size(path, 60_000, 60_000)
    with pytest.raises(
        SlideError,
        match=rf"declares 60,000{TIMES}60,000 pixels.*55,225 tiles.*holds 4",
    ):
        describe(path)


def test_a_flat_tiff_that_lies_about_its_size_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "strips.tif"
    Image.new("RGB", (64, 64), (10, 20, 30)).save(path, format="TIFF")
    assert describe(path)["kind"] == "flat"
    _patch_size(path, 30_000, 30_000)
    with pytest.raises(SlideError, match=f"30,000{TIMES}30,000 pixels"):
        describe(path)


def test_tiff_data_end_of_a_whole_file_is_within_it() -> None:
    extent = tiff_data_end(SVS)
    assert extent is not None
    end, size = extent
    assert 0 < end <= size == SVS.stat().st_size
    assert tiff_data_end(Path(__file__)) is None
