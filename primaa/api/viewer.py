"""The web viewer: its page, and the Deep Zoom tiles of a job's image.

The page is a static single-page app (``primaa/web/static``) under a strict
Content-Security-Policy. The tiles follow the job's access rules: they are read
through :meth:`JobManager.image_path`, so another client's job is not found.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

from aiohttp import web

from primaa.api.apidoc import docs
from primaa.api.errors import ApiError
from primaa.api.jobs import client_id_of
from primaa.api.schemas import ErrorSchema
from primaa.appkeys import DEEP_ZOOM, MANAGER
from primaa.imaging.deepzoom import NoSuchTile
from primaa.imaging.slides import SlideError
from primaa.web import STATIC_DIR

TAG = ["viewer"]
STATIC_URL: Final = "/viewer"

#: Everything from this origin, nothing inline, nothing from elsewhere. Images may be
#: ``blob:`` URLs: OpenSeadragon loads tiles with fetch (to send the API key) and shows
#: them from blobs.
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob:;"
    " connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none';"
    " form-action 'self'"
)
PAGE_HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
#: Tiles of a file never change (a replaced file has another ETag); ``private``: they
#: may be behind an API key.
TILE_CACHE_CONTROL: Final = "private, max-age=86400"
_TILE: Final = re.compile(r"(\d{1,6})_(\d{1,6})\.jpeg")

_TILE_ERRORS = {
    404: {"schema": ErrorSchema, "description": "No such job or tile, or its image is not kept"},
    422: {"schema": ErrorSchema, "description": "The image cannot be read"},
}


@docs(
    tags=TAG,
    summary="The web viewer (a single-page app)",
    responses={200: {"description": "HTML page"}},
)
async def home(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)


async def _image_path(request: web.Request) -> Path:
    path = await request.app[MANAGER].image_path(
        request.match_info["job_id"], client_id=client_id_of(request)
    )
    if path is None:
        raise ApiError(
            404,
            "no_image",
            "the job's image is not available here: not fetched yet, or removed after"
            " image_retention_seconds",
        )
    return path


@docs(
    tags=TAG,
    summary="Deep Zoom descriptor of the job's image",
    description="For OpenSeadragon; tiles are at `image_files/{level}/{col}_{row}.jpeg`.",
    responses={200: {"description": "DZI XML"}, **_TILE_ERRORS},
)
async def image_dzi(request: web.Request) -> web.Response:
    path = await _image_path(request)
    try:
        pyramid = await request.app[DEEP_ZOOM].pyramid(path)
    except SlideError as exc:
        raise ApiError(422, "unreadable_image", str(exc)) from None
    return web.Response(
        text=pyramid.xml(),
        content_type="application/xml",
        headers={"Cache-Control": "private, no-cache"},
    )


@docs(
    tags=TAG,
    summary="A Deep Zoom tile of the job's image (JPEG)",
    description="`tile` is `{col}_{row}.jpeg`. Answers 304 to a matching `If-None-Match`.",
    responses={200: {"description": "JPEG"}, 304: {"description": "Not modified"}, **_TILE_ERRORS},
)
async def image_tile(request: web.Request) -> web.Response:
    matched = _TILE.fullmatch(request.match_info["tile"])
    level_text = request.match_info["level"]
    if matched is None or not level_text.isdigit() or len(level_text) > 3:
        raise ApiError(
            404, "not_found", "no such tile: expected image_files/{level}/{col}_{row}.jpeg"
        )
    path = await _image_path(request)
    try:
        tile = await request.app[DEEP_ZOOM].tile(
            path, int(level_text), int(matched[1]), int(matched[2])
        )
    except NoSuchTile as exc:
        raise ApiError(404, "not_found", str(exc)) from None
    except SlideError as exc:
        raise ApiError(422, "unreadable_image", str(exc)) from None
    headers = {"ETag": tile.etag, "Cache-Control": TILE_CACHE_CONTROL}
    if tile.etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    return web.Response(body=tile.jpeg, content_type="image/jpeg", headers=headers)
