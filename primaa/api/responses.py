"""JSON answers, encoded by :func:`primaa.fastjson.dumps`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from primaa.fastjson import dumps


def json_response(
    data: Any,
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    content_type: str = "application/json",
) -> web.Response:
    return web.Response(body=dumps(data), status=status, headers=headers, content_type=content_type)
