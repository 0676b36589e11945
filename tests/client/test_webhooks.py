"""``verify_webhook`` on the service's own callbacks and on the reference implementation's
signatures (``standardwebhooks``), and its refusals."""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from standardwebhooks import Webhook

from primaa.client import AsyncClient, InvalidSignature, verify_webhook
from primaa.webhooks.signing import decode_secret
from tests.client.conftest import SECRET
from tests.conftest import ImageServer

OTHER_SECRET = "whsec_" + base64.b64encode(b"another-key-another-key-another!").decode()
BODY = b'{"type": "Feature", "geometry": null, "properties": {"job_id": "j1"}}'


def reference_headers(secret: str, body: bytes, *, at: float | None = None) -> dict[str, str]:
    """Headers as the Standard Webhooks reference library signs them."""
    timestamp = datetime.datetime.fromtimestamp(time.time() if at is None else at, datetime.UTC)
    return {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": Webhook(secret).sign("msg_1", timestamp, body.decode()),
    }


def test_reference_signature_verifies() -> None:
    assert verify_webhook(reference_headers(SECRET, BODY), BODY, SECRET) == json.loads(BODY)


def test_header_names_are_case_insensitive_and_bytes_secrets_work() -> None:
    headers = {k.title(): v for k, v in reference_headers(SECRET, BODY).items()}
    assert verify_webhook(headers, BODY.decode(), decode_secret(SECRET))["type"] == "Feature"


def test_one_matching_signature_among_several_is_enough() -> None:
    headers = reference_headers(SECRET, BODY)
    other = reference_headers(OTHER_SECRET, BODY)["webhook-signature"]
    headers["webhook-signature"] = f"{other} {headers['webhook-signature']}"
    verify_webhook(headers, BODY, SECRET)


def test_tampered_body_is_refused() -> None:
    headers = reference_headers(SECRET, BODY)
    with pytest.raises(InvalidSignature, match="no signature matches"):
        verify_webhook(headers, BODY.replace(b"j1", b"j2"), SECRET)


def test_wrong_secret_is_refused() -> None:
    with pytest.raises(InvalidSignature):
        verify_webhook(reference_headers(SECRET, BODY), BODY, OTHER_SECRET)


def test_old_and_future_timestamps_are_refused() -> None:
    old = reference_headers(SECRET, BODY, at=time.time() - 301)
    with pytest.raises(InvalidSignature, match="too old"):
        verify_webhook(old, BODY, SECRET)
    verify_webhook(old, BODY, SECRET, tolerance=600)
    future = reference_headers(SECRET, BODY, at=time.time() + 3600)
    with pytest.raises(InvalidSignature, match="future"):
        verify_webhook(future, BODY, SECRET)


def test_missing_or_malformed_headers_are_refused() -> None:
    headers = reference_headers(SECRET, BODY)
    for name in headers:
        partial = {k: v for k, v in headers.items() if k != name}
        with pytest.raises(InvalidSignature, match="missing"):
            verify_webhook(partial, BODY, SECRET)
    with pytest.raises(InvalidSignature, match="Unix time"):
        verify_webhook({**headers, "webhook-timestamp": "yesterday"}, BODY, SECRET)


def test_a_secret_not_of_the_service_form_is_a_usage_error() -> None:
    with pytest.raises(ValueError, match="webhook secret") as caught:
        verify_webhook(reference_headers(SECRET, BODY), BODY, "plain-text")
    assert not isinstance(caught.value, InvalidSignature)


async def test_the_service_callbacks_verify(
    api: AsyncClient, image_server: ImageServer, aiohttp_server: Callable[..., Any]
) -> None:
    """A real callback of the service, body bytes as received: verified with the secret,
    and by the reference library too; the client's verdict and the reference's agree."""
    received: asyncio.Queue[tuple[dict[str, str], bytes]] = asyncio.Queue()

    async def callback(request: web.Request) -> web.Response:
        await received.put((dict(request.headers), await request.read()))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/callback", callback)
    receiver: TestServer = await aiohttp_server(app)
    job = await api.submit(
        "test_sleep",
        image_url=image_server.url("/tile.png"),
        parameters={"seconds": 0},
        callback_url=str(receiver.make_url("/callback")),
    )
    headers, body = await asyncio.wait_for(received.get(), 30)
    payload = verify_webhook(headers, body, SECRET)
    assert payload["properties"]["job_id"] == job.job_id
    assert Webhook(SECRET).verify(body, headers) == payload
    with pytest.raises(InvalidSignature):
        verify_webhook(headers, body + b" ", SECRET)
