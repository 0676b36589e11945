"""Operational endpoints: health, metrics, and the API's own documentation."""

from __future__ import annotations

from aiohttp import web

from primaa import __version__
from primaa.api.algorithms import broken_plugins
from primaa.api.apidoc import docs, response_schema
from primaa.api.openapi import swagger_page
from primaa.api.responses import json_response
from primaa.api.schemas import HealthSchema
from primaa.appkeys import EXECUTOR_STATE, MANAGER, METRICS, OPENAPI, REGISTRY, SETTINGS, STORE
from primaa.jobs.errors import StorageUnavailable

TAG = ["service"]
STATIC_URL = "/docs/static"


@docs(tags=TAG, summary="Liveness and readiness", responses={503: {"schema": HealthSchema}})
@response_schema(HealthSchema, 200)
async def health(request: web.Request) -> web.Response:
    registry = request.app[REGISTRY]
    store_state = "ok"
    store = request.app[STORE]
    try:
        await store.count_by_status()
        await store.check_writable()
    except StorageUnavailable as exc:
        store_state = f"error: {exc.cause}"
    except Exception as exc:
        store_state = f"error: {type(exc).__name__}"
    executor_state = request.app[EXECUTOR_STATE]() if EXECUTOR_STATE in request.app else "ok"
    # Degraded, not unavailable: submissions are still taken and wait for the executor.
    healthy = store_state == "ok" and not registry.broken and executor_state == "ok"
    status = "ok" if healthy else "degraded"
    if store_state != "ok":
        status = "unavailable"
    manager = request.app.get(MANAGER)
    if manager is not None and manager.draining:
        # Stopping: a load balancer should send new work elsewhere; reads still work.
        status = "draining"
    body = {
        "status": status,
        "version": __version__,
        "algorithms": registry.names(),
        "broken_plugins": broken_plugins(registry),
        "store": store_state,
        "workers": request.app[SETTINGS].worker_count,
        "executor": executor_state,
    }
    return json_response(body, status=503 if status in {"unavailable", "draining"} else 200)


@docs(
    tags=TAG,
    summary="Prometheus metrics",
    responses={200: {"description": "Prometheus text exposition format"}},
)
async def metrics(request: web.Request) -> web.Response:
    collected = request.app[METRICS]
    collected.set_job_counts(await request.app[STORE].count_by_status())
    return web.Response(
        body=collected.render(),
        content_type="text/plain",
        charset="utf-8",
        headers={"Cache-Control": "no-store"},
    )


@docs(tags=TAG, summary="This OpenAPI 3 document")
async def openapi_json(request: web.Request) -> web.Response:
    return json_response(request.app[OPENAPI])


@docs(
    tags=TAG,
    summary="Browsable API documentation (Swagger UI)",
    responses={200: {"description": "HTML page"}},
)
async def swagger_ui(request: web.Request) -> web.Response:
    return web.Response(text=swagger_page("/openapi.json", STATIC_URL), content_type="text/html")
