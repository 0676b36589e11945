"""Typed exceptions for the service's error answers, carrying its JSON error body.

The service answers every error as ``{code, error, type, details?, request_id}``; each
exception keeps those fields so a caller can branch on ``type`` and quote ``request_id``
to an operator without parsing messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from primaa.client.models import Job

__all__ = [
    "BadRequest",
    "Conflict",
    "ConnectionFailed",
    "InvalidRequest",
    "NotFound",
    "PayloadTooLarge",
    "PrimaaError",
    "ServerError",
    "TooManyRequests",
    "Unauthorized",
    "Unavailable",
    "WaitTimeout",
    "error_for",
]


class PrimaaError(Exception):
    """Anything the client raises; ``status`` is ``None`` when the service did not answer."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        type: str = "error",
        details: Mapping[str, Any] | None = None,
        request_id: str | None = None,
        body: Mapping[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.type = type
        self.details: dict[str, Any] = dict(details) if details else {}
        self.request_id = request_id
        #: The whole error body as the service sent it (empty when it was not JSON).
        self.body: dict[str, Any] = dict(body) if body else {}
        #: Seconds the service asked to wait (``Retry-After``), when it said.
        self.retry_after = retry_after

    def __str__(self) -> str:
        where = f"HTTP {self.status} " if self.status is not None else ""
        request = f" (request {self.request_id})" if self.request_id else ""
        return f"{where}{self.type}: {self.message}{request}"


class BadRequest(PrimaaError):
    """400: the request was malformed."""


class Unauthorized(PrimaaError):
    """401: no API key, or one the service does not know."""


class NotFound(PrimaaError):
    """404: no such job (or not one of this key's), algorithm or endpoint."""


class Conflict(PrimaaError):
    """409: not possible in the job's state (no result yet, nothing to redeliver)."""


class PayloadTooLarge(PrimaaError):
    """413: the body or the uploaded image is over the service's limit."""


class InvalidRequest(PrimaaError):
    """422: invalid fields, algorithm or parameters; ``details`` names each field."""


class TooManyRequests(PrimaaError):
    """429: too many unfinished jobs; retried, and raised once retries are spent."""


class ServerError(PrimaaError):
    """5xx: the service failed."""


class Unavailable(ServerError):
    """503: the service is draining or its store is down; retried, then raised."""


class ConnectionFailed(PrimaaError):
    """No answer: refused, reset or timed out."""


class WaitTimeout(PrimaaError, TimeoutError):
    """:meth:`wait` gave up before the job finished; ``job`` is the last state seen."""

    def __init__(self, message: str, job: Job) -> None:
        super().__init__(message, type="wait_timeout")
        self.job = job


_BY_STATUS: dict[int, type[PrimaaError]] = {
    400: BadRequest,
    401: Unauthorized,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: InvalidRequest,
    429: TooManyRequests,
    503: Unavailable,
}


def error_for(
    status: int, body: Any, *, text: str = "", retry_after: float | None = None
) -> PrimaaError:
    """The exception for an error answer; a body that is not the service's JSON (a proxy's
    HTML page, say) still gives the right class, with the start of the text as message."""
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else PrimaaError)
    if not isinstance(body, Mapping) or "error" not in body:
        message = " ".join(text.split())[:200] or f"HTTP {status}"
        return cls(message, status=status, type="http_error", retry_after=retry_after)
    details = body.get("details")
    request_id = body.get("request_id")
    return cls(
        str(body["error"]),
        status=status,
        type=str(body.get("type", "error")),
        details=details if isinstance(details, Mapping) else None,
        request_id=str(request_id) if request_id is not None else None,
        body=body,
        retry_after=retry_after,
    )
