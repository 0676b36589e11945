"""Whole-slide test images, built once per session from the annotated H&E tiles."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.slides import NUCLEI, BuiltSlide, build_slide, scatter

SVS = Path(__file__).resolve().parents[1] / "data" / "CMU-1-Small-Region.svs"
SOURCES = sorted(NUCLEI.glob("*.png"))
TILE = (512, 512)


def _build(
    directory: Path, name: str, *, mpp: float | None, compression: str = "jpeg"
) -> BuiltSlide:
    size = (4096, 3072)
    return build_slide(
        directory / name,
        size=size,
        sources=SOURCES,
        positions=scatter(size, 6, TILE, seed=1),
        mpp=mpp,
        compression=compression,
    )


@pytest.fixture(scope="session")
def slides_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("slides")


@pytest.fixture(scope="session")
def pyramid(slides_dir: Path) -> BuiltSlide:
    """JPEG-tiled, five levels, 0.5 µm per pixel: what a scanner would write."""
    return _build(slides_dir, "pyramid.tif", mpp=0.5)


@pytest.fixture(scope="session")
def lossless(slides_dir: Path) -> BuiltSlide:
    """The same layout, deflate-compressed, for exact pixel comparisons."""
    return _build(slides_dir, "lossless.tif", mpp=0.5, compression="deflate")


@pytest.fixture(scope="session")
def no_mpp(slides_dir: Path) -> BuiltSlide:
    """Written without a resolution (pyvips' default of 1 pixel per millimetre)."""
    return _build(slides_dir, "no-mpp.tif", mpp=None)
