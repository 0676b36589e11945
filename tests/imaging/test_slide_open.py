"""open_slide: formats, levels and resolution, and refusals as SlideError."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from primaa.imaging.slides import Level, SlideError, open_slide
from primaa.imaging.slides.base import MAX_READ_PIXELS
from tests.imaging.conftest import SVS
from tests.support.slides import BuiltSlide


def test_aperio_svs_levels_and_resolution() -> None:
    with open_slide(SVS) as slide:
        assert slide.format == "aperio"
        assert slide.dimensions == (2220, 2967)
        assert slide.levels == (Level(2220, 2967, 1.0),)
        assert slide.mpp == pytest.approx(0.499)


def test_built_pyramid_levels_and_resolution(pyramid: BuiltSlide) -> None:
    with open_slide(pyramid.path) as slide:
        assert slide.format == "generic-tiff"
        assert slide.dimensions == (4096, 3072)
        assert [(lv.width, lv.height, lv.downsample) for lv in slide.levels] == [
            (4096 >> k, 3072 >> k, float(1 << k)) for k in range(5)
        ]
        assert slide.mpp == pytest.approx(0.5)


def test_a_slide_without_resolution_has_no_mpp(no_mpp: BuiltSlide) -> None:
    with open_slide(no_mpp.path) as slide:
        assert slide.mpp is None
        assert len(slide.levels) == 5
        with pytest.raises(SlideError, match="does not state its resolution"):
            slide.read_region(0, 0, 8, 8, mpp=1.0)
        assert slide.resolve_downsample(mpp=1.0, downsample=3.0) == 3.0


def test_a_default_dpi_is_not_a_resolution(tmp_path: Path) -> None:
    """72 dpi is what software writes when it does not know; OpenSlide reports 352.8 µm/px."""
    import pyvips

    path = tmp_path / "dpi.tif"
    image = pyvips.Image.new_from_array(np.full((300, 300, 3), 200, np.uint8))
    image.tiffsave(str(path), tile=True, pyramid=True, resunit="inch", xres=72 / 25.4)
    with open_slide(path) as slide:
        assert slide.format == "generic-tiff"
        assert slide.mpp is None


@pytest.mark.parametrize(("fmt", "name"), [("PNG", "png"), ("JPEG", "jpeg"), ("TIFF", "tiff")])
def test_flat_images_are_one_level_slides(tmp_path: Path, fmt: str, name: str) -> None:
    path = tmp_path / "flat"
    Image.new("RGB", (300, 200), (10, 200, 30)).save(path, fmt)
    with open_slide(path) as slide:
        assert slide.format == name
        assert slide.dimensions == (300, 200)
        assert slide.levels == (Level(300, 200, 1.0),)
        assert slide.mpp is None
        region = slide.read_region(290, 190, 20, 20)
    assert region.shape == (20, 20, 3)
    assert np.abs(region[:10, :10].astype(int) - (10, 200, 30)).max() <= 3
    assert (region[10:, :] == 255).all()
    assert (region[:, 10:] == 255).all()


def test_flat_images_respect_the_pixel_limit(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    Image.new("RGB", (1000, 1000)).save(path)
    with pytest.raises(SlideError, match="above the limit"):
        open_slide(path, max_flat_pixels=999_999)


@pytest.mark.parametrize("kind", ["flat", "openslide"])
def test_a_closed_slide_refuses_reads(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "flat.png"
    Image.new("RGB", (10, 10)).save(path)
    slide = open_slide(path if kind == "flat" else SVS)
    slide.close()
    with pytest.raises(SlideError, match="closed"):
        slide.read_region(0, 0, 2, 2)


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"<html><body>no</body></html>", "unsupported slide format"),
        (b"%PDF-1.7\n" + b"\0" * 100, r"unsupported slide format \(PDF\)"),
        (b"GIF89a" + b"\0" * 100, r"unsupported slide format \(GIF\)"),
    ],
)
def test_unsupported_files(tmp_path: Path, data: bytes, message: str) -> None:
    with pytest.raises(SlideError, match=message):
        open_slide(_write(tmp_path, "file.svs", data))


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SlideError, match="cannot read the image"):
        open_slide(tmp_path / "absent.svs")


@pytest.mark.parametrize("keep", [5_000, 1_000_000])
def test_a_truncated_svs(tmp_path: Path, keep: int) -> None:
    path = _write(tmp_path, "cut.svs", SVS.read_bytes()[:keep])
    with pytest.raises(SlideError, match="truncated or corrupt") as caught:
        open_slide(path)
    assert str(tmp_path) not in str(caught.value)


def test_corrupt_tiles_fail_when_read(tmp_path: Path) -> None:
    """The directory is intact, so the slide opens; the damaged tiles fail on reading."""
    data = bytearray(SVS.read_bytes())
    data[200_000:260_000] = bytes(60_000)
    with open_slide(_write(tmp_path, "bad.svs", bytes(data))) as slide:
        assert slide.format == "aperio"
        with pytest.raises(SlideError, match="truncated or corrupt") as caught:
            slide.read_region(0, 0, 2220, 2967, downsample=16.0)
    assert str(tmp_path) not in str(caught.value)


def test_a_truncated_pyramid(tmp_path: Path, pyramid: BuiltSlide) -> None:
    data = pyramid.path.read_bytes()
    path = _write(tmp_path, "cut.tif", data[: len(data) // 2])
    with pytest.raises(SlideError), open_slide(path) as slide:
        slide.read_region(0, 0, 4096, 3072, downsample=4.0)


def test_read_arguments_are_checked(pyramid: BuiltSlide) -> None:
    with open_slide(pyramid.path) as slide:
        with pytest.raises(ValueError, match="at most one"):
            slide.read_region(0, 0, 4, 4, level=1, mpp=1.0)
        with pytest.raises(ValueError, match="positive"):
            slide.read_region(0, 0, 0, 4)
        with pytest.raises(ValueError, match="out of range"):
            slide.read_region(0, 0, 4, 4, level=5)
        with pytest.raises(ValueError, match="positive number"):
            slide.read_region(0, 0, 4, 4, downsample=-1.0)
        with pytest.raises(SlideError, match="above the limit"):
            slide.read_region(0, 0, MAX_READ_PIXELS, 2)


def test_levels_pickle_and_repr(pyramid: BuiltSlide) -> None:
    with open_slide(pyramid.path) as slide:
        assert pickle.loads(pickle.dumps(slide.levels)) == slide.levels
        assert "pyramid.tif generic-tiff 4096x3072" in repr(slide)


def test_best_and_nearest_levels(pyramid: BuiltSlide) -> None:
    with open_slide(pyramid.path) as slide:
        assert [slide.best_level(d) for d in (0.5, 1.0, 3.9, 4.0, 100.0)] == [0, 0, 1, 2, 4]
        assert [slide.nearest_level(d) for d in (0.5, 2.7, 3.0, 5.0, 100.0)] == [0, 1, 2, 2, 4]
