"""The Python client of a primaa service, asyncio (:class:`AsyncClient`) or blocking
(:class:`Client`)::

    from primaa.client import Client

    with Client("http://127.0.0.1:8000", api_key="...") as client:
        job = client.wait(client.submit("poi_detection", image_url=url).job_id)

It talks HTTP only and imports nothing of the service's side (checked by import-linter).
"""

from primaa.client.aio import AsyncClient
from primaa.client.errors import (
    BadRequest,
    Conflict,
    ConnectionFailed,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    PrimaaError,
    ServerError,
    TooManyRequests,
    Unauthorized,
    Unavailable,
    WaitTimeout,
)
from primaa.client.models import FINAL_STATUSES, Job
from primaa.client.retry import RetryPolicy
from primaa.client.sync import Client
from primaa.client.webhooks import InvalidSignature, verify_webhook

__all__ = [
    "FINAL_STATUSES",
    "AsyncClient",
    "BadRequest",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "InvalidRequest",
    "InvalidSignature",
    "Job",
    "NotFound",
    "PayloadTooLarge",
    "PrimaaError",
    "RetryPolicy",
    "ServerError",
    "TooManyRequests",
    "Unauthorized",
    "Unavailable",
    "WaitTimeout",
    "verify_webhook",
]
