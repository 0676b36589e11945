"""Deep Zoom (DZI) tiles of any slide or flat image, for the web viewer's OpenSeadragon.

The pyramid is OpenSlide's ``DeepZoomGenerator``'s (254-pixel tiles, 1 pixel of
overlap, levels halving down to 1x1), computed over :class:`Slide` so flat PNG/JPEG
images and whole-slide files are served the same way; each tile is one
:meth:`Slide.read_region` at the level's downsample, encoded as JPEG.

Reads and encoding block, so :class:`DeepZoomTiles` runs them in its own threads,
off the event loop, and keeps the encoded tiles and a few open slides in LRU caches.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import hashlib
import math
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final, TypeVar

import cv2

from primaa.imaging.slides.base import Slide, SlideError
from primaa.imaging.slides.opener import open_slide

__all__ = ["DeepZoomTiles", "DziPyramid", "NoSuchTile", "RenderedTile"]

TILE_SIZE: Final = 254
OVERLAP: Final = 1
JPEG_QUALITY: Final = 80


class NoSuchTile(ValueError):
    """The level, column or row is outside the pyramid."""


@dataclasses.dataclass(frozen=True, slots=True)
class DziPyramid:
    """The Deep Zoom levels of an image of ``width`` x ``height`` level-0 pixels."""

    width: int
    height: int
    tile_size: int = TILE_SIZE
    overlap: int = OVERLAP

    @property
    def level_count(self) -> int:
        return max(math.ceil(math.log2(max(self.width, self.height, 1))), 0) + 1

    def level_size(self, level: int) -> tuple[int, int]:
        scale = 2 ** (self.level_count - 1 - level)
        return max(1, math.ceil(self.width / scale)), max(1, math.ceil(self.height / scale))

    def tile_box(self, level: int, col: int, row: int) -> tuple[int, int, int, int]:
        """(x, y, width, height) of a tile in its level's own pixels, overlap included."""
        if not 0 <= level < self.level_count:
            raise NoSuchTile(f"level {level} is not in 0..{self.level_count - 1}")
        width, height = self.level_size(level)
        cols = math.ceil(width / self.tile_size)
        rows = math.ceil(height / self.tile_size)
        if not (0 <= col < cols and 0 <= row < rows):
            raise NoSuchTile(f"tile {col}_{row} is not in level {level} ({cols}x{rows} tiles)")
        x = col * self.tile_size - (self.overlap if col else 0)
        y = row * self.tile_size - (self.overlap if row else 0)
        right = min(width, (col + 1) * self.tile_size + self.overlap)
        bottom = min(height, (row + 1) * self.tile_size + self.overlap)
        return x, y, right - x, bottom - y

    def xml(self) -> str:
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<Image xmlns="http://schemas.microsoft.com/deepzoom/2008" Format="jpeg"'
            f' Overlap="{self.overlap}" TileSize="{self.tile_size}">'
            f'<Size Width="{self.width}" Height="{self.height}"/></Image>\n'
        )


def render_tile(slide: Slide, pyramid: DziPyramid, level: int, col: int, row: int) -> bytes:
    """One tile as JPEG bytes."""
    x, y, width, height = pyramid.tile_box(level, col, row)
    scale = float(2 ** (pyramid.level_count - 1 - level))
    pixels = slide.read_region(x * scale, y * scale, width, height, downsample=scale)
    ok, encoded = cv2.imencode(
        ".jpg", cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
    )
    if not ok:
        raise SlideError("the tile could not be encoded as JPEG")
    return bytes(encoded)


@dataclasses.dataclass(frozen=True, slots=True)
class RenderedTile:
    jpeg: bytes
    etag: str


_FileKey = tuple[str, int, int]
_T = TypeVar("_T")


class DeepZoomTiles:
    """DZI descriptors and JPEG tiles of image files, rendered in threads and cached.

    A file is known by its path, size and modification time, so a replaced file is
    never served from the cache; the ETag says the same.
    """

    def __init__(
        self,
        *,
        tile_cache: int = 2048,
        open_slides: int = 4,
        threads: int = 2,
        opener: Callable[[Path], Slide] = open_slide,
    ) -> None:
        self._opener = opener
        self._tile_capacity = tile_cache
        self._slide_capacity = max(1, open_slides)
        self._tiles: collections.OrderedDict[tuple[_FileKey, int, int, int], RenderedTile] = (
            collections.OrderedDict()
        )
        self._slides: collections.OrderedDict[_FileKey, Slide] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._opening = threading.Lock()
        self._threads = ThreadPoolExecutor(threads, thread_name_prefix="primaa-deepzoom")

    def close(self) -> None:
        """Drop queued renders and wait for the one in hand (a tile: milliseconds), so no
        thread finishes after the event loop closed."""
        self._threads.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            self._tiles.clear()
            slides, self._slides = list(self._slides.values()), collections.OrderedDict()
        for slide in slides:
            slide.close()

    async def pyramid(self, path: Path) -> DziPyramid:
        """The pyramid of the image at ``path``; raises :class:`SlideError` when unreadable."""
        return await self._in_thread(lambda: self._pyramid(path))

    async def tile(self, path: Path, level: int, col: int, row: int) -> RenderedTile:
        """A JPEG tile; :class:`NoSuchTile` outside the pyramid, :class:`SlideError` when
        the image cannot be read."""
        return await self._in_thread(lambda: self._tile(path, level, col, row))

    async def _in_thread(self, work: Callable[[], _T]) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._threads, work)

    def _pyramid(self, path: Path) -> DziPyramid:
        width, height = self._slide(_file_key(path), path).dimensions
        return DziPyramid(width, height)

    def _tile(self, path: Path, level: int, col: int, row: int) -> RenderedTile:
        file_key = _file_key(path)
        key = (file_key, level, col, row)
        with self._lock:
            cached = self._tiles.get(key)
            if cached is not None:
                self._tiles.move_to_end(key)
                return cached
        slide = self._slide(file_key, path)
        width, height = slide.dimensions
        jpeg = render_tile(slide, DziPyramid(width, height), level, col, row)
        digest = hashlib.sha256(repr(key).encode()).hexdigest()[:32]
        rendered = RenderedTile(jpeg, f'"{digest}"')
        with self._lock:
            self._tiles[key] = rendered
            while len(self._tiles) > self._tile_capacity:
                self._tiles.popitem(last=False)
        return rendered

    def _slide(self, file_key: _FileKey, path: Path) -> Slide:
        with self._lock:
            slide = self._slides.get(file_key)
            if slide is not None:
                self._slides.move_to_end(file_key)
                return slide
        # One opening at a time: a flat image is decoded whole when opened, and two
        # requests for a new image must not decode it twice.
        with self._opening:
            with self._lock:
                slide = self._slides.get(file_key)
            if slide is None:
                slide = self._opener(path)
                with self._lock:
                    self._slides[file_key] = slide
                    # Evicted slides are left to the garbage collector: another thread
                    # may still be reading one.
                    while len(self._slides) > self._slide_capacity:
                        self._slides.popitem(last=False)
        return slide


def _file_key(path: Path) -> _FileKey:
    try:
        stat = path.stat()
    except OSError as exc:
        raise SlideError(f"cannot read the image: {exc.strerror}") from None
    return str(path), stat.st_size, stat.st_mtime_ns
