"""Safe fetching of image URLs, decoding with limits."""

from primaa.imaging.decode import ImageDecodeError, decode_image, image_size
from primaa.imaging.fetch import FetchError, ImageFetcher, spool_part
from primaa.imaging.urlguard import (
    GuardedResolver,
    UnsafeAddress,
    UnsafeUrl,
    UrlGuard,
    make_connector,
)

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
