"""Every route of the service, in one place; each view with schemas validates its input
(:func:`~primaa.api.middlewares.validated`)."""

from __future__ import annotations

from aiohttp import web

from primaa.api import algorithms, jobs, legacy, service, viewer
from primaa.api.middlewares import validated
from primaa.api.openapi import SWAGGER_STATIC
from primaa.web import STATIC_DIR


def add_routes(app: web.Application) -> None:
    router = app.router
    router.add_get("/", validated(viewer.home), allow_head=False)
    router.add_post("/job-submission", validated(legacy.submit))
    router.add_get("/status/{job_id}", validated(legacy.status), allow_head=False)
    router.add_post("/jobs", validated(jobs.create_job))
    router.add_get("/jobs", validated(jobs.list_jobs), allow_head=False)
    router.add_get("/jobs/{job_id}", validated(jobs.get_job), allow_head=False)
    router.add_delete("/jobs/{job_id}", validated(jobs.delete_job))
    router.add_get("/jobs/{job_id}/result", validated(jobs.get_result), allow_head=False)
    router.add_get("/jobs/{job_id}/image.dzi", validated(viewer.image_dzi), allow_head=False)
    router.add_get(
        "/jobs/{job_id}/image_files/{level}/{tile}", validated(viewer.image_tile), allow_head=False
    )
    router.add_post("/jobs/{job_id}/cancel", validated(jobs.cancel_job))
    router.add_post("/jobs/{job_id}/callback", validated(jobs.redeliver_callback))
    router.add_get("/algorithms", validated(algorithms.list_algorithms), allow_head=False)
    router.add_get("/algorithms/{name}", validated(algorithms.get_algorithm), allow_head=False)
    router.add_get("/health", validated(service.health), allow_head=False)
    router.add_get("/metrics", validated(service.metrics), allow_head=False)
    router.add_get("/openapi.json", validated(service.openapi_json), allow_head=False)
    router.add_get("/docs", validated(service.swagger_ui), allow_head=False)
    router.add_static(service.STATIC_URL, SWAGGER_STATIC)
    router.add_static(viewer.STATIC_URL, STATIC_DIR)
