"""Safe fetching of image URLs, decoding with limits.

Worker processes import `primaa.imaging.decode` and must not pull in aiohttp,
so the fetching names are re-exported lazily.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from primaa.imaging.decode import ImageDecodeError, decode_image, image_size

if TYPE_CHECKING:
    from primaa.imaging.fetch import FetchError, ImageFetcher, spool_part
    from primaa.imaging.urlguard import (
        GuardedResolver,
        UnsafeAddress,
        UnsafeUrl,
        UrlGuard,
        make_connector,
    )

_LAZY = {
    "FetchError": "fetch",
    "ImageFetcher": "fetch",
    "spool_part": "fetch",
    "GuardedResolver": "urlguard",
    "UnsafeAddress": "urlguard",
    "UnsafeUrl": "urlguard",
    "UrlGuard": "urlguard",
    "make_connector": "urlguard",
}

__all__ = [
    "FetchError",
    "GuardedResolver",
    "ImageDecodeError",
    "ImageFetcher",
    "UnsafeAddress",
    "UnsafeUrl",
    "UrlGuard",
    "decode_image",
    "image_size",
    "make_connector",
    "spool_part",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
