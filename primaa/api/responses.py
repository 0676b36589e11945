"""JSON answers rendered by orjson: several times faster than ``json`` on the large
GeoJSON results and on the small bodies of every status poll."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web


def dumps(data: Any) -> bytes:
    try:
        return orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError:
        # Integers beyond 64 bits, which a client may send inside parameters.
        return json.dumps(data).encode()


def json_response(
    data: Any,
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    content_type: str = "application/json",
) -> web.Response:
    return web.Response(body=dumps(data), status=status, headers=headers, content_type=content_type)
