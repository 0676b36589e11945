"""The OpenAPI 3 document, rendered from the aiohttp-apispec decorators on the views.

aiohttp-apispec 2.2.3 can only emit Swagger 2.0, so we keep its decorators as
the one place an endpoint is described (they also drive input validation, see
``middlewares.validated``) and render OpenAPI 3 with apispec ourselves.
Each installed algorithm's parameter schema becomes a component, so plugins
show up in the docs as soon as they are installed.
"""

from __future__ import annotations

import copy
from http import HTTPStatus
from pathlib import Path
from typing import Any

import aiohttp_apispec
import marshmallow
from aiohttp import web
from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

from primaa.api.auth import public_paths
from primaa.api.schemas import ErrorSchema
from primaa.appkeys import SETTINGS
from primaa.plugins.registry import AlgorithmRegistry

SWAGGER_STATIC = Path(aiohttp_apispec.__file__).parent / "static"
_LOCATIONS = {"querystring": "query", "match_info": "path", "headers": "header"}


def _schema_name(schema: type[marshmallow.Schema] | marshmallow.Schema) -> str:
    cls = schema if isinstance(schema, type) else type(schema)
    name = cls.__name__
    return name[: -len("Schema")] if name.endswith("Schema") and name != "Schema" else name


def _new_spec(title: str, version: str) -> APISpec:
    return APISpec(
        title=title,
        version=version,
        openapi_version="3.0.3",
        plugins=[MarshmallowPlugin(schema_name_resolver=_schema_name)],
    )


def parameters_json_schema(schema: type[marshmallow.Schema]) -> dict[str, Any]:
    """The JSON Schema of an algorithm's parameters (for ``GET /algorithms/{name}``)."""
    plugin = MarshmallowPlugin(schema_name_resolver=lambda _: None)
    APISpec(title="-", version="-", openapi_version="3.0.3", plugins=[plugin])
    converted: dict[str, Any] = {**plugin.converter.schema2jsonschema(schema)}
    if getattr(getattr(schema, "Meta", None), "unknown", marshmallow.RAISE) == marshmallow.RAISE:
        converted["additionalProperties"] = False
    return converted


def build_openapi(
    app: web.Application, registry: AlgorithmRegistry, version: str
) -> dict[str, Any]:
    spec = _new_spec("primaa", version)
    spec.options["info"] = {
        "description": "Image-analysis jobs for digital pathology. Algorithms come from plugins.",
    }
    parameter_refs = []
    for name, entry in registry.algorithms.items():
        component = f"Parameters_{name}"
        spec.components.schema(component, parameters_json_schema(entry.algorithm.Parameters))
        parameter_refs.append({"$ref": f"#/components/schemas/{component}"})
    for route in app.router.routes():
        handler = route.handler
        meta = getattr(handler, "__apispec__", None)
        resource = route.resource
        if meta is None or resource is None:
            continue
        path = resource.canonical
        spec.path(path=path, operations={route.method.lower(): _operation(handler, meta, path)})
    document: dict[str, Any] = spec.to_dict()
    _describe_algorithms(document, registry, parameter_refs)
    settings = app.get(SETTINGS)
    if settings is not None and settings.api_keys:
        _declare_security(document, public_paths(settings))
    return document


def _declare_security(document: dict[str, Any], public: frozenset[str]) -> None:
    """Either key header on every operation but the public ones, which say ``security: []``."""
    document.setdefault("components", {})["securitySchemes"] = {
        "ApiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        "BearerKey": {"type": "http", "scheme": "bearer", "description": "The API key."},
    }
    document["security"] = [{"ApiKeyHeader": []}, {"BearerKey": []}]
    unauthorized = {
        "description": "No valid API key",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    for path, operations in document.get("paths", {}).items():
        for operation in operations.values():
            if path in public:
                operation["security"] = []
            else:
                operation.setdefault("responses", {}).setdefault("401", unauthorized)


def _operation(handler: Any, meta: dict[str, Any], path: str) -> dict[str, Any]:
    meta = copy.copy(meta)
    operation: dict[str, Any] = {
        key: meta[key] for key in ("tags", "summary", "description") if key in meta
    }
    operation["operationId"] = handler.__name__
    parameters: list[dict[str, Any]] = list(meta.get("parameters", []))
    request_body = copy.deepcopy(meta.get("requestBody"))
    for spec in getattr(handler, "__schemas__", []):
        location = (spec["locations"] or ["json"])[0]
        if location == "json":
            request_body = request_body or {"content": {}}
            request_body["required"] = True
            request_body["content"]["application/json"] = {"schema": spec["schema"]}
        else:
            parameters.append({"in": _LOCATIONS.get(location, location), "schema": spec["schema"]})
    for key in _path_keys(path):
        if not any(p.get("in") == "path" and p.get("name") == key for p in parameters):
            parameters.append(
                {"in": "path", "name": key, "required": True, "schema": {"type": "string"}}
            )
    if parameters:
        operation["parameters"] = parameters
    if request_body:
        operation["requestBody"] = request_body
    responses: dict[str, Any] = {}
    for code, response in _with_validation_errors(handler, meta).items():
        entry: dict[str, Any] = {"description": response.get("description") or _reason(code)}
        if "schema" in response:
            entry["content"] = {"application/json": {"schema": response["schema"]}}
        responses[str(code)] = entry
    operation["responses"] = responses or {"200": {"description": "OK"}}
    return operation


def _with_validation_errors(handler: Any, meta: dict[str, Any]) -> dict[Any, Any]:
    """The view's documented answers plus those ``validated`` gives for its schemas.

    A view with a JSON body can get 400 (not JSON) and 413 (over ``max_body_bytes``),
    one with a query schema 422: documenting them here keeps every view honest.
    """
    responses = dict(meta.get("responses", {}))
    documented = {str(code) for code in responses}
    locations = {(s["locations"] or ["json"])[0] for s in getattr(handler, "__schemas__", [])}
    added: dict[int, str] = {}
    if "json" in locations:
        added[400] = "The body is not a JSON object"
        added[413] = "The body is larger than the server accepts"
    if "querystring" in locations:
        added[422] = "Invalid query parameters"
    for code, description in added.items():
        if str(code) not in documented:
            responses[code] = {"schema": ErrorSchema, "description": description}
    return responses


def _path_keys(path: str) -> list[str]:
    return [part[1:-1].split(":")[0] for part in path.split("/") if part.startswith("{")]


def _reason(code: int | str) -> str:
    try:
        return HTTPStatus(int(code)).phrase
    except ValueError:
        return "Response"


def _describe_algorithms(
    document: dict[str, Any], registry: AlgorithmRegistry, parameter_refs: list[dict[str, Any]]
) -> None:
    """Name the installed algorithms where a submission chooses one."""
    schemas = document.get("components", {}).get("schemas", {})
    names = registry.names()
    for schema_name in ("JobSubmission", "LegacySubmission"):
        properties = schemas.get(schema_name, {}).get("properties", {})
        if "algorithm_name" in properties and names:
            properties["algorithm_name"]["enum"] = names
        if "parameters" in properties and parameter_refs:
            properties["parameters"]["anyOf"] = parameter_refs
    listing = "\n".join(
        f"- `{n}` ({e.plugin}): {e.algorithm.summary}" for n, e in registry.algorithms.items()
    )
    document["info"]["description"] += "\n\nInstalled algorithms:\n" + listing


def swagger_page(openapi_url: str, static_url: str) -> str:
    """Swagger UI (the copy bundled with aiohttp-apispec, so it works offline)."""
    template = (SWAGGER_STATIC / "index.html").read_text()
    return template.replace("{{ static }}", static_url).replace("{{ path }}", openapi_url)
