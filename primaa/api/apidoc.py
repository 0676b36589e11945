"""aiohttp-apispec's decorators with types, so decorated views keep their signatures for mypy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import aiohttp_apispec

View = TypeVar("View", bound=Callable[..., Any])


def docs(**kwargs: Any) -> Callable[[View], View]:
    return cast(Callable[[View], View], aiohttp_apispec.docs(**kwargs))


def json_schema(schema: Any) -> Callable[[View], View]:
    return cast(Callable[[View], View], aiohttp_apispec.json_schema(schema))


def querystring_schema(schema: Any) -> Callable[[View], View]:
    return cast(Callable[[View], View], aiohttp_apispec.querystring_schema(schema))


def response_schema(schema: Any, code: int = 200, description: str = "") -> Callable[[View], View]:
    return cast(
        Callable[[View], View],
        aiohttp_apispec.response_schema(schema, code, description=description or None),
    )
