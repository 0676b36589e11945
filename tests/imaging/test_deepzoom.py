"""Deep Zoom tiles: the same pyramid as OpenSlide's DeepZoomGenerator, pixels that match
it, flat images served the same way, and the caches."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import openslide
import pytest
from openslide.deepzoom import DeepZoomGenerator
from PIL import Image

from primaa.imaging.deepzoom import DeepZoomTiles, DziPyramid, NoSuchTile
from primaa.imaging.slides import SlideError, open_slide
from tests.conftest import synthetic_he_png
from tests.imaging.conftest import SVS


@pytest.mark.parametrize("size", [(1, 1), (254, 254), (255, 100), (2220, 2967), (100000, 3)])
def test_the_pyramid_is_openslides(size: tuple[int, int]) -> None:
    """Level count, level sizes and tile boxes of OpenSlide's generator (limit_bounds off)."""

    class _Fake:
        dimensions = size
        level_count = 1
        level_dimensions = (size,)
        level_downsamples = (1.0,)
        properties: dict[str, str] = {}  # noqa: RUF012

        def get_best_level_for_downsample(self, _: float) -> int:
            return 0

    theirs = DeepZoomGenerator(_Fake(), tile_size=254, overlap=1)  # type: ignore[arg-type]
    ours = DziPyramid(*size)
    assert ours.level_count == theirs.level_count
    for level in range(ours.level_count):
        assert ours.level_size(level) == theirs.level_dimensions[level]
        cols, rows = theirs.level_tiles[level]
        for col, row in {(0, 0), (cols - 1, rows - 1), (cols // 2, rows // 2)}:
            _, (width, height) = theirs._get_tile_info(level, (col, row))
            assert ours.tile_box(level, col, row)[2:] == (width, height)
        with pytest.raises(NoSuchTile):
            ours.tile_box(level, cols, 0)
    with pytest.raises(NoSuchTile):
        ours.tile_box(ours.level_count, 0, 0)


async def test_tiles_of_a_whole_slide_look_like_openslides() -> None:
    generator = DeepZoomGenerator(openslide.OpenSlide(str(SVS)), tile_size=254, overlap=1)
    tiles = DeepZoomTiles(tile_cache=16)
    try:
        pyramid = await tiles.pyramid(SVS)
        assert pyramid.level_count == generator.level_count
        assert (pyramid.width, pyramid.height) == generator.level_dimensions[-1]
        levels = [n for n, (c, r) in enumerate(generator.level_tiles) if c > 1 and r > 1]
        assert len(levels) >= 3
        for level in levels:
            ours = await tiles.tile(SVS, level, 1, 1)
            image = np.asarray(Image.open(io.BytesIO(ours.jpeg)).convert("RGB"), np.float64)
            theirs = np.asarray(generator.get_tile(level, (1, 1)).convert("RGB"), np.float64)
            assert image.shape == theirs.shape
            # JPEG at quality 80 and a different resampling: close, not equal.
            assert np.abs(image - theirs).mean() < 8
    finally:
        tiles.close()


async def test_a_flat_image_is_one_pyramid_and_cached(tmp_path: Path) -> None:
    path = tmp_path / "flat.png"
    path.write_bytes(synthetic_he_png(600, 300))
    opened: list[Path] = []

    def opener(file: Path):  # type: ignore[no-untyped-def]
        opened.append(file)
        return open_slide(file)

    tiles = DeepZoomTiles(tile_cache=4, opener=opener)
    try:
        pyramid = await tiles.pyramid(path)
        assert (pyramid.width, pyramid.height, pyramid.level_count) == (600, 300, 11)
        top = pyramid.level_count - 1
        first = await tiles.tile(path, top, 0, 0)
        again = await tiles.tile(path, top, 0, 0)
        assert again is first
        assert Image.open(io.BytesIO(first.jpeg)).size == (255, 255)
        assert Image.open(io.BytesIO((await tiles.tile(path, 0, 0, 0)).jpeg)).size == (1, 1)
        assert opened == [path], "decoded once for every tile"
        # The same name with other content is another file: new tiles, new ETag.
        path.write_bytes(synthetic_he_png(600, 300, seed=5))
        os.utime(path, ns=(1, 1))
        replaced = await tiles.tile(path, top, 0, 0)
        assert replaced.etag != first.etag
        with pytest.raises(NoSuchTile):
            await tiles.tile(path, top, 3, 0)
    finally:
        tiles.close()


async def test_an_unreadable_image_is_a_slide_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.img"
    path.write_bytes(b"not an image at all")
    tiles = DeepZoomTiles()
    try:
        with pytest.raises(SlideError):
            await tiles.pyramid(path)
        with pytest.raises(SlideError):
            await tiles.pyramid(tmp_path / "missing.img")
    finally:
        tiles.close()
