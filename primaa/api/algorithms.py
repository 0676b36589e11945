"""``/algorithms``: what is installed, and the parameters each algorithm takes."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from primaa.api.apidoc import docs, response_schema
from primaa.api.errors import ApiError
from primaa.api.openapi import parameters_json_schema
from primaa.api.responses import json_response
from primaa.api.schemas import AlgorithmDetailSchema, AlgorithmListSchema, ErrorSchema
from primaa.appkeys import REGISTRY
from primaa.plugins.registry import AlgorithmRegistry, RegisteredAlgorithm

TAG = ["algorithms"]


def summarize(entry: RegisteredAlgorithm) -> dict[str, Any]:
    algorithm = entry.algorithm
    return {
        "name": algorithm.name,
        "version": algorithm.version,
        "summary": algorithm.summary,
        "plugin": entry.plugin,
        "cpu_bound": algorithm.cpu_bound,
    }


def describe(entry: RegisteredAlgorithm) -> dict[str, Any]:
    algorithm = entry.algorithm
    return {
        **summarize(entry),
        "description": algorithm.description,
        "default_timeout": algorithm.default_timeout,
        "parameters": parameters_json_schema(algorithm.Parameters),
        "slides": slide_support(entry),
    }


def slide_support(entry: RegisteredAlgorithm) -> dict[str, Any] | None:
    """How the algorithm runs on whole-slide images; ``None``: on whole images only."""
    algorithm = entry.algorithm
    if algorithm.mpp is None:
        return None
    return {"mpp": algorithm.mpp, "border_um": algorithm.border_um, "tiled": algorithm.tiled}


def broken_plugins(registry: AlgorithmRegistry) -> list[dict[str, str]]:
    return [{"name": b.name, "error": b.error} for b in registry.broken]


@docs(tags=TAG, summary="Installed algorithms, and plugins that failed to load")
@response_schema(AlgorithmListSchema, 200)
async def list_algorithms(request: web.Request) -> web.Response:
    registry = request.app[REGISTRY]
    return json_response(
        {
            "algorithms": [summarize(e) for e in registry.algorithms.values()],
            "broken_plugins": broken_plugins(registry),
        }
    )


@docs(
    tags=TAG,
    summary="One algorithm and its parameter schema",
    responses={404: {"schema": ErrorSchema}},
)
@response_schema(AlgorithmDetailSchema, 200)
async def get_algorithm(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    entry = request.app[REGISTRY].algorithms.get(name)
    if entry is None:
        raise ApiError(404, "not_found", f"no algorithm named {name!r}")
    return json_response(describe(entry))
