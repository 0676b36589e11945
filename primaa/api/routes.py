"""Every route of the service, in one place."""

from __future__ import annotations

from aiohttp import web

from primaa.api import algorithms, jobs, legacy, service, viewer
from primaa.api.openapi import SWAGGER_STATIC
from primaa.web import STATIC_DIR


def add_routes(app: web.Application) -> None:
    router = app.router
    router.add_get("/", viewer.home, allow_head=False)
    router.add_post("/job-submission", legacy.submit)
    router.add_get("/status/{job_id}", legacy.status, allow_head=False)
    router.add_post("/jobs", jobs.create_job)
    router.add_get("/jobs", jobs.list_jobs, allow_head=False)
    router.add_get("/jobs/{job_id}", jobs.get_job, allow_head=False)
    router.add_delete("/jobs/{job_id}", jobs.delete_job)
    router.add_get("/jobs/{job_id}/result", jobs.get_result, allow_head=False)
    router.add_get("/jobs/{job_id}/image.dzi", viewer.image_dzi, allow_head=False)
    router.add_get("/jobs/{job_id}/image_files/{level}/{tile}", viewer.image_tile, allow_head=False)
    router.add_post("/jobs/{job_id}/cancel", jobs.cancel_job)
    router.add_post("/jobs/{job_id}/callback", jobs.redeliver_callback)
    router.add_get("/algorithms", algorithms.list_algorithms, allow_head=False)
    router.add_get("/algorithms/{name}", algorithms.get_algorithm, allow_head=False)
    router.add_get("/health", service.health, allow_head=False)
    router.add_get("/metrics", service.metrics, allow_head=False)
    router.add_get("/openapi.json", service.openapi_json, allow_head=False)
    router.add_get("/docs", service.swagger_ui, allow_head=False)
    router.add_static(service.STATIC_URL, SWAGGER_STATIC)
    router.add_static(viewer.STATIC_URL, STATIC_DIR)
