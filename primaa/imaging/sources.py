"""Where a job's image comes from, and what it is: the jobs core's ``ImageSource``.

``http(s)://`` URLs are streamed into the spool by :class:`ImageFetcher` (within
the slide limit: whether the file is a slide is known only once it is here);
``file://`` URLs name slides on shared storage, checked against ``file_roots``
at submission and again at run time, and read in place, never copied. Every
image is then described (:func:`describe_image`) off the event loop, which is
also where a flat image above the flat limits, a truncated slide or an unknown
format ends the job with a message the client can act on.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Final

import structlog

from primaa.imaging.describe import describe_image
from primaa.imaging.fetch import ImageFetcher
from primaa.imaging.file_roots import FileRoots, FileUrlRefused, is_file_url
from primaa.imaging.slides.base import SlideError
from primaa.imaging.urlguard import UrlGuard
from primaa.jobs.ports import ImageUnavailable

__all__ = ["ImageSources", "ImageUnreadable"]

#: Files up to this size are described on the event loop: describing reads only their
#: head, and a hand-off to a thread and back costs more CPU than that.
INLINE_DESCRIBE_BYTES: Final = 64 * 1024

log = structlog.get_logger(__name__)


def _small(path: Path) -> bool:
    """One stat on the loop (a local spool file, or attributes the OS caches)."""
    try:
        return path.stat().st_size <= INLINE_DESCRIBE_BYTES
    except OSError:
        return False  # the thread meets the error again, and names it


class ImageUnreadable(ImageUnavailable):
    """The image is here but cannot be used: refused path, damaged, unknown, too large."""


class ImageSources:
    """Implements :class:`primaa.jobs.ports.ImageSource` over the fetcher and the file roots."""

    def __init__(
        self,
        fetcher: ImageFetcher,
        guard: UrlGuard,
        roots: FileRoots,
        *,
        max_flat_bytes: int,
        max_flat_pixels: int,
    ) -> None:
        self._fetcher = fetcher
        self._guard = guard
        self._roots = roots
        self._max_flat_bytes = max_flat_bytes
        self._max_flat_pixels = max_flat_pixels

    async def check(self, url: str) -> None:
        """Refuse at submission what can never be read (raise ``ValueError`` naming why)."""
        if is_file_url(url):
            await asyncio.to_thread(self._roots.resolve, url)
        else:
            self._guard.check_url(url)

    async def fetch(self, url: str, job_id: str) -> Path:
        """The image's path: a spool file for http(s), the real path in place for file://."""
        if not is_file_url(url):
            return await self._fetcher.fetch(url, job_id)
        try:
            # Checked again: the file or a symlink on its way may have changed since.
            return await asyncio.to_thread(self._roots.resolve, url)
        except FileUrlRefused as exc:
            raise ImageUnreadable(str(exc)) from None

    async def in_place(self, url: str) -> Path | None:
        if not is_file_url(url):
            return None
        try:
            return await asyncio.to_thread(self._roots.resolve, url)
        except FileUrlRefused:
            return None

    async def describe(self, path: Path) -> dict[str, Any]:
        """Say what the image is (in a thread, unless the file is small); raise
        :class:`ImageUnreadable`."""
        if _small(path):
            return self._describe(path)
        return await asyncio.to_thread(self._describe, path)

    def _describe(self, path: Path) -> dict[str, Any]:
        try:
            return describe_image(
                path, max_flat_bytes=self._max_flat_bytes, max_flat_pixels=self._max_flat_pixels
            )
        except SlideError as exc:
            raise ImageUnreadable(str(exc)) from None
        except (OSError, ValueError, MemoryError) as exc:
            # A reader's own failure on a hostile file: the job fails, with its kind only.
            log.warning("image_describe_failed", error=repr(exc))
            raise ImageUnreadable(f"cannot read the image ({type(exc).__name__})") from None
