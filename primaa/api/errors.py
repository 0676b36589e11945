"""Every error answer is JSON of one shape: ``{code, error, type, details?, request_id}``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import marshmallow
from aiohttp import web

from primaa.api.responses import json_response
from primaa.jobs.errors import (
    CannotDelete,
    CannotRedeliver,
    InvalidParameters,
    InvalidRequest,
    JobError,
    JobNotFound,
    ResultNotReady,
    ResultUnavailable,
    ShuttingDown,
    StorageUnavailable,
    TooManyJobs,
    UnknownAlgorithm,
    schema_messages,
)


class ApiError(Exception):
    """An error answer raised by a view or middleware."""

    def __init__(
        self,
        status: int,
        kind: str,
        message: str,
        details: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        self.details = dict(details) if details else None
        self.headers = dict(headers) if headers else None


def validation_error(exc: marshmallow.ValidationError, where: str) -> ApiError:
    """422 naming the fields that failed, with each field's messages in ``details``."""
    messages = schema_messages(exc)
    return ApiError(
        422, "validation_error", f"invalid {where}: {', '.join(sorted(messages))}", messages
    )


def from_job_error(exc: JobError) -> ApiError:
    """The HTTP form of a domain error."""
    if isinstance(exc, JobNotFound):
        return ApiError(404, "not_found", str(exc))
    if isinstance(exc, UnknownAlgorithm):
        return ApiError(
            422,
            "unknown_algorithm",
            str(exc),
            {"algorithm_name": [str(exc)], "available": exc.available},
        )
    if isinstance(exc, InvalidParameters):
        return ApiError(422, "invalid_parameters", str(exc), {"parameters": exc.messages})
    if isinstance(exc, InvalidRequest):
        return ApiError(422, "invalid_request", str(exc), {exc.field: [exc.message]})
    if isinstance(exc, ResultNotReady):
        return ApiError(409, "no_result", str(exc), {"status": str(exc.status)})
    if isinstance(exc, CannotRedeliver):
        return ApiError(409, "cannot_redeliver", str(exc))
    if isinstance(exc, CannotDelete):
        return ApiError(409, "cannot_delete", str(exc))
    if isinstance(exc, ResultUnavailable):
        return ApiError(500, "result_unavailable", str(exc))
    if isinstance(exc, TooManyJobs):
        return ApiError(
            429, "too_many_jobs", str(exc), headers={"Retry-After": str(exc.retry_after)}
        )
    if isinstance(exc, StorageUnavailable):
        retry = {"Retry-After": str(exc.retry_after)}
        if exc.full:
            return ApiError(507, "insufficient_storage", str(exc), headers=retry)
        return ApiError(503, "store_unavailable", str(exc), headers=retry)
    if isinstance(exc, ShuttingDown):
        return ApiError(
            503, "shutting_down", str(exc), headers={"Retry-After": str(exc.retry_after)}
        )
    return ApiError(400, "bad_request", str(exc))


_HTTP_KINDS = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
    503: "unavailable",
}


def from_http_exception(exc: web.HTTPException) -> ApiError:
    kind = _HTTP_KINDS.get(exc.status, "error")
    message = exc.reason
    if exc.status == 404:
        message = "no such endpoint"
    elif exc.status == 413:
        message = f"request body too large: {exc.text}" if exc.text else "request body too large"
    headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
    return ApiError(exc.status, kind, message, headers=headers or None)


def error_response(err: ApiError, request_id: str | None) -> web.Response:
    body: dict[str, Any] = {"code": err.status, "error": err.message, "type": err.kind}
    if err.details:
        body["details"] = err.details
    if request_id:
        body["request_id"] = request_id
    return json_response(body, status=err.status, headers=err.headers)


#: The answers of an endpoint that writes when the store cannot (OpenAPI ``responses``).
STORAGE_RESPONSES: dict[int, dict[str, Any]] = {
    503: {"description": "The service is stopping, or the database is read-only (Retry-After)"},
    507: {"description": "The disk is full (Retry-After)"},
}
