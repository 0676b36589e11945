"""Slides kept open in a worker process, so consecutive tiles of a slide share one handle.

Opening is not free (an MRXS or a large NDPI index takes tens to hundreds of
milliseconds), and a worker usually gets many tiles of the same slide in a row.
A handle must never cross a fork: a child would share the parent's file
offsets, so a cache used in another process than the one that filled it starts
empty and never uses the handles it inherited. A flat image is held decoded,
so the default capacity is small.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Callable
from pathlib import Path

from primaa.imaging.slides.base import RGB, Slide, SlideError
from primaa.imaging.slides.opener import open_slide
from primaa.imaging.slides.tiling import Tile

__all__ = ["SlideCache", "read_tile"]

_Key = tuple[str, int, int]


class SlideCache:
    """At most ``capacity`` open slides, least recently used closed first.

    A slide is found again by its path, size and modification time, so a file
    replaced under the same name is opened afresh.
    """

    def __init__(self, capacity: int = 2, opener: Callable[[Path], Slide] = open_slide) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._opener = opener
        self._slides: collections.OrderedDict[_Key, Slide] = collections.OrderedDict()
        self._pid = os.getpid()

    def __len__(self) -> int:
        self._forget_if_forked()
        return len(self._slides)

    def get(self, path: str | os.PathLike[str]) -> Slide:
        """The open slide at ``path``, opened now if it is not open yet."""
        self._forget_if_forked()
        file = Path(path)
        try:
            stat = file.stat()
        except OSError as exc:
            raise SlideError(f"cannot read the slide: {exc.strerror}") from None
        key = (str(file.resolve()), stat.st_size, stat.st_mtime_ns)
        slide = self._slides.get(key)
        if slide is not None:
            self._slides.move_to_end(key)
            return slide
        slide = self._opener(file)
        self._slides[key] = slide
        while len(self._slides) > self.capacity:
            _, oldest = self._slides.popitem(last=False)
            oldest.close()
        return slide

    def close(self) -> None:
        """Close every slide this process opened."""
        self._forget_if_forked()
        while self._slides:
            _, slide = self._slides.popitem()
            slide.close()

    def _forget_if_forked(self) -> None:
        if os.getpid() != self._pid:
            self._slides = collections.OrderedDict()
            self._pid = os.getpid()


_cache = SlideCache()


def read_tile(path: str | os.PathLike[str], tile: Tile) -> RGB:
    """A tile's pixels, in a worker: the slide is opened once per process and kept open."""
    return tile.read(_cache.get(path))
