"""``/jobs``: submit (JSON or upload), list, read, result, cancel."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import marshmallow
from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from primaa.api.apidoc import docs, json_schema, querystring_schema, response_schema
from primaa.api.errors import STORAGE_RESPONSES, ApiError, validation_error
from primaa.api.present import present_job
from primaa.api.responses import json_response
from primaa.api.result_stream import GEOJSON, stream_qupath, stream_result_file
from primaa.api.schemas import (
    ErrorSchema,
    FeatureSchema,
    JobListQuerySchema,
    JobPageSchema,
    JobSchema,
    JobSubmissionSchema,
    ResultQuerySchema,
)
from primaa.appkeys import CLIENT_ID, JSON_BODY, MANAGER, QUERY, RESULT_INDEXES, SETTINGS
from primaa.config import Settings
from primaa.imaging.describe import is_slide
from primaa.imaging.fetch import EmptyUpload, FetchError, SpoolFull, spool_part
from primaa.jobs.errors import StorageUnavailable
from primaa.jobs.manager import JobRequest
from primaa.jobs.model import JobStatus
from primaa.results.bbox import BadBbox, ResultIndex, parse_bbox

TAG = ["jobs"]
_UPLOAD_DOC = {
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["image", "algorithm_name"],
                "properties": {
                    "image": {"type": "string", "format": "binary"},
                    "algorithm_name": {"type": "string", "minLength": 1, "maxLength": 200},
                    "parameters": {
                        "type": "object",
                        "description": "The algorithm's parameters, a JSON object",
                    },
                    "callback_url": {"type": "string", "format": "url", "minLength": 1},
                    "callback_token": {"type": "string", "maxLength": 4096},
                    "timeout": {"type": "number", "minimum": 1},
                },
                # Unknown parts are refused (422), as unknown JSON fields are.
                "additionalProperties": False,
            },
            # An object part is JSON text (OpenAPI's default for objects, said once more).
            "encoding": {"parameters": {"contentType": "application/json"}},
        }
    }
}


def client_id_of(request: web.Request) -> str | None:
    """The API key the request is made with; ``None`` while authentication is off."""
    return request.get(CLIENT_ID)


@docs(
    tags=TAG,
    summary="Submit a job",
    description="JSON with `image_url`, or multipart/form-data with the image in part `image`.",
    requestBody=_UPLOAD_DOC,
    responses={
        400: {"schema": ErrorSchema, "description": "Malformed body"},
        413: {"schema": ErrorSchema, "description": "Body or upload too large"},
        415: {"schema": ErrorSchema, "description": "Neither JSON nor multipart"},
        422: {"schema": ErrorSchema, "description": "Invalid fields, algorithm or parameters"},
        429: {"schema": ErrorSchema, "description": "Too many unfinished jobs"},
        **STORAGE_RESPONSES,
    },
)
@json_schema(JobSubmissionSchema)
@response_schema(JobSchema, 202, description="Accepted; `Location` names the job")
async def create_job(request: web.Request) -> web.Response:
    if request.content_type == "multipart/form-data":
        job_request = await _upload_request(request)
    else:
        body = request[JSON_BODY]
        job_request = job_request_from(body, service_url=service_url_of(request))
    job = await request.app[MANAGER].submit(job_request, client_id=client_id_of(request))
    return json_response(
        present_job(job, []), status=202, headers={"Location": f"/jobs/{job.job_id}"}
    )


#: An upload's form fields: the JSON submission's, with the image in a part of its own.
_UPLOAD_FIELDS = JobSubmissionSchema(exclude=("image_url",))


def service_url_of(request: web.Request) -> str:
    """The service's address as this client reached it (``scheme://host[:port]``)."""
    return str(request.url.origin())


def job_request_from(
    fields: Mapping[str, Any], image_path: Path | None = None, *, service_url: str | None = None
) -> JobRequest:
    """The manager's request from validated submission fields (JSON, form or original API)."""
    return JobRequest(
        service_url=service_url,
        algorithm=fields["algorithm_name"],
        parameters=fields["parameters"],
        image_url=fields.get("image_url"),
        image_path=image_path,
        callback_url=fields["callback_url"],
        callback_token=fields["callback_token"],
        timeout=fields.get("timeout"),
    )


async def _upload_request(request: web.Request) -> JobRequest:
    """Stream the ``image`` part to the spool; the other parts are small form fields."""
    settings = request.app[SETTINGS]
    upload_dir = settings.spool_dir / "uploads"
    upload_dir.mkdir(parents=True, exist_ok=True)
    image_path: Path | None = None
    fields: dict[str, Any] = {}
    try:
        try:
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader):
                    raise ApiError(400, "bad_request", "nested multipart bodies are not supported")
                if part.name == "image":
                    if image_path is not None:
                        raise ApiError(400, "bad_request", "more than one `image` part")
                    image_path = upload_dir / f"{uuid.uuid4().hex}.img"
                    try:
                        await _spool_image(part, image_path, settings)
                    except EmptyUpload as exc:
                        raise ApiError(
                            422, "validation_error", str(exc), {"image": [str(exc)]}
                        ) from None
                    except SpoolFull as exc:
                        raise StorageUnavailable(
                            exc.cause, full=True, where="the upload spool"
                        ) from None
                    except FetchError as exc:
                        raise ApiError(413, "too_large", str(exc)) from None
                elif part.name:
                    fields[part.name] = await part.text()
        except (ValueError, HttpProcessingError) as exc:
            # aiohttp's multipart reader says "no boundary" or "not UTF-8" with a
            # ValueError and "invalid part header" with BadHttpMessage: the body is
            # malformed, not our bug.
            message = getattr(exc, "message", None) or str(exc)
            raise ApiError(400, "bad_multipart", f"malformed multipart body: {message}") from None
        if image_path is None:
            raise ApiError(
                422, "validation_error", "missing the `image` part", {"image": ["required"]}
            )
        if "parameters" in fields:
            try:
                fields["parameters"] = json.loads(fields["parameters"])
            except (ValueError, RecursionError):
                raise ApiError(
                    422,
                    "validation_error",
                    "`parameters` is not JSON",
                    {"parameters": ["must be a JSON object"]},
                ) from None
        try:
            data = _UPLOAD_FIELDS.load(fields)
        except marshmallow.ValidationError as exc:
            raise validation_error(exc, "form fields") from None
    except BaseException:
        if image_path is not None:
            image_path.unlink(missing_ok=True)
        raise
    return job_request_from(data, image_path, service_url=service_url_of(request))


async def _spool_image(part: BodyPartReader, dest: Path, settings: Settings) -> None:
    """Stream the upload within the slide limit, then hold a flat image to the flat one:
    what the file is shows only once it is here (OpenSlide reads it, or not)."""
    written = await spool_part(part, dest, max(settings.max_slide_bytes, settings.max_image_bytes))
    if written > settings.max_image_bytes and not await asyncio.to_thread(is_slide, dest):
        raise FetchError(
            f"upload of {written:,} bytes is not a whole-slide image and is larger than the"
            f" limit for flat images ({settings.max_image_bytes:,} bytes, max_image_bytes)"
        )


@docs(
    tags=TAG,
    summary="List jobs, newest first",
    responses={
        422: {
            "schema": ErrorSchema,
            "description": "Invalid query parameters, or a `cursor` this service did not give out",
        },
    },
)
@querystring_schema(JobListQuerySchema)
@response_schema(JobPageSchema, 200)
async def list_jobs(request: web.Request) -> web.Response:
    query = request[QUERY]
    try:
        page = await request.app[MANAGER].list(
            status=JobStatus(query["status"]) if "status" in query else None,
            algorithm=query.get("algorithm_name"),
            client_id=client_id_of(request),
            cursor=query.get("cursor") or None,
            limit=query["limit"],
        )
    except ValueError:
        # Well-formed but unknown to the server, like any other invalid value: 422.
        raise ApiError(422, "bad_cursor", "`cursor` is not one this service gave out") from None
    return json_response(
        {"jobs": [present_job(j) for j in page.jobs], "next_cursor": page.next_cursor}
    )


@docs(tags=TAG, summary="Read a job", responses={404: {"schema": ErrorSchema}})
@response_schema(JobSchema, 200)
async def get_job(request: web.Request) -> web.Response:
    manager = request.app[MANAGER]
    job_id = request.match_info["job_id"]
    job, deliveries = await manager.get_with_deliveries(job_id, client_id=client_id_of(request))
    return json_response(present_job(job, deliveries))


@docs(
    tags=TAG,
    summary="The result of a completed job",
    description=(
        "A result larger than `result_inline_max_bytes` is kept as a gzip file and streamed:"
        " as stored, with `Content-Encoding: gzip`, to a client that sends"
        " `Accept-Encoding: gzip`, decompressed on the way otherwise. The document is the"
        " same either way. `format=qupath` is streamed too."
    ),
    responses={
        400: {"schema": ErrorSchema, "description": "A malformed `bbox`"},
        404: {"schema": ErrorSchema, "description": "No such job"},
        409: {"schema": ErrorSchema, "description": "The job has no result (yet)"},
        500: {
            "schema": ErrorSchema,
            "description": "The result's file is not in this server's `data_dir`",
        },
    },
)
@querystring_schema(ResultQuerySchema)
@response_schema(FeatureSchema, 200, description="GeoJSON Feature, or QuPath FeatureCollection")
async def get_result(request: web.Request) -> web.StreamResponse:
    manager = request.app[MANAGER]
    query = request[QUERY]
    job_id = request.match_info["job_id"]
    feature: Mapping[str, Any]
    if "bbox" in query:
        feature = await _result_window(request, query["bbox"], query["limit"])
    elif query["format"] == "qupath":
        feature = await manager.result(job_id, client_id=client_id_of(request))
    else:
        document = await manager.result_document(job_id, client_id=client_id_of(request))
        if document.path is not None:
            return await stream_result_file(request, document.path)
        assert document.feature is not None
        feature = document.feature
    if query["format"] == "qupath":
        return await stream_qupath(request, feature)
    return json_response(dict(feature), content_type=GEOJSON)


async def _result_window(request: web.Request, bbox_text: str, limit: int) -> dict[str, Any]:
    """The result's objects in a window, from an index built once per result, off the loop."""
    try:
        bbox = parse_bbox(bbox_text)
    except BadBbox as exc:
        raise ApiError(400, "bad_bbox", str(exc)) from None
    manager = request.app[MANAGER]
    job_id = request.match_info["job_id"]
    client_id = client_id_of(request)
    indexes = request.app[RESULT_INDEXES]
    await manager.get(job_id, client_id=client_id)
    index = indexes.get(job_id)
    if index is None:
        feature = await manager.result(job_id, client_id=client_id)
        index = await asyncio.to_thread(ResultIndex.of, feature)
        indexes.put(job_id, index)
    return await asyncio.to_thread(index.window, bbox, limit)


@docs(
    tags=TAG,
    summary="Delete a finished job",
    description=(
        "Removes the job, its result (and the result's file, for a large one), its callback"
        " deliveries and its kept image. An unfinished job cannot be deleted: cancel it first."
    ),
    responses={
        204: {"description": "Deleted"},
        404: {"schema": ErrorSchema, "description": "No such job"},
        409: {"schema": ErrorSchema, "description": "The job is not finished"},
        **STORAGE_RESPONSES,
    },
)
async def delete_job(request: web.Request) -> web.Response:
    job_id = request.match_info["job_id"]
    await request.app[MANAGER].delete(job_id, client_id=client_id_of(request))
    request.app[RESULT_INDEXES].discard(job_id)
    return web.Response(status=204)


@docs(
    tags=TAG,
    summary="Cancel a job",
    description="A Pending job is cancelled at once; a Running one at its next progress report.",
    responses={404: {"schema": ErrorSchema}, **STORAGE_RESPONSES},
)
@response_schema(JobSchema, 202)
async def cancel_job(request: web.Request) -> web.Response:
    manager = request.app[MANAGER]
    job = await manager.cancel(request.match_info["job_id"], client_id=client_id_of(request))
    return json_response(present_job(job), status=202)


@docs(
    tags=TAG,
    summary="Send a finished job's callback again",
    description=(
        "Queues a new delivery of the job's final Feature (the same payload as the first"
        " callback) to its callback URL. It is a new message: it gets a new `delivery_id`,"
        " sent as `webhook-id`, so receivers that de-duplicate do not drop it. It then"
        " retries on the usual schedule; `callback` in the answer shows it."
    ),
    responses={
        404: {"schema": ErrorSchema, "description": "No such job"},
        409: {"schema": ErrorSchema, "description": "The job is not finished or has no callback"},
        **STORAGE_RESPONSES,
    },
)
@response_schema(JobSchema, 202, description="Queued; `callback.delivery_id` names the new one")
async def redeliver_callback(request: web.Request) -> web.Response:
    manager = request.app[MANAGER]
    client_id = client_id_of(request)
    job_id = request.match_info["job_id"]
    await manager.redeliver(job_id, client_id=client_id)
    job, deliveries = await manager.get_with_deliveries(job_id, client_id=client_id)
    return json_response(present_job(job, deliveries), status=202)
