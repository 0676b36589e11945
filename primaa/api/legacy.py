"""The original API, kept for existing clients: same paths, fields and status spellings.

What changed: real HTTP status codes (404 for an unknown job, 4xx for an
invalid submission, which creates no job) instead of 200 with a code inside.
"""

from __future__ import annotations

from aiohttp import web

from primaa.api.apidoc import docs, json_schema, response_schema
from primaa.api.errors import STORAGE_RESPONSES
from primaa.api.jobs import client_id_of, job_request_from, service_url_of
from primaa.api.present import legacy_status
from primaa.api.responses import json_response
from primaa.api.schemas import ErrorSchema, LegacyStatusSchema, LegacySubmissionSchema
from primaa.appkeys import JSON_BODY, MANAGER
from primaa.jobs.errors import JobNotFound

TAG = ["original API"]


@docs(
    tags=TAG,
    summary="Submit a job (original API)",
    responses={
        400: {"schema": ErrorSchema},
        422: {"schema": ErrorSchema},
        429: {"schema": ErrorSchema},
        **STORAGE_RESPONSES,
    },
)
@json_schema(LegacySubmissionSchema)
@response_schema(LegacyStatusSchema, 200)
async def submit(request: web.Request) -> web.Response:
    body = request[JSON_BODY]
    job = await request.app[MANAGER].submit(
        job_request_from(body, service_url=service_url_of(request)),
        client_id=client_id_of(request),
    )
    return json_response(legacy_status(job.job_id, job.status, job.error))


@docs(tags=TAG, summary="Job status (original API)")
@response_schema(LegacyStatusSchema, 200)
@response_schema(LegacyStatusSchema, 404, description="Unknown job: status `NotFound`")
async def status(request: web.Request) -> web.Response:
    job_id = request.match_info["job_id"]
    try:
        state = await request.app[MANAGER].state(job_id, client_id=client_id_of(request))
    except JobNotFound as exc:
        return json_response(
            {"code": 404, "job_id": job_id, "status": "NotFound", "error": str(exc)}, status=404
        )
    return json_response(legacy_status(job_id, state.status, state.error))
