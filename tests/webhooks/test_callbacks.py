"""Callbacks end to end: signatures, retries, persistence across restarts, refusals, redelivery.

Every test drives the real app and a real loopback receiver; signatures are checked
with the ``standardwebhooks`` reference library, not with our own signing code.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from primaa.app import create_app
from tests.conftest import ImageServer, make_settings, wait_for_callback, wait_for_job
from tests.webhooks.conftest import HANG, Receiver

Client = TestClient[Any, Any]
MakeClient = Callable[..., Awaitable[Client]]
SECRET = "whsec_" + base64.b64encode(b"primaa-test-signing-key-32-bytes").decode()
QUICK = {"seconds": 0.01, "steps": 1}


async def submit(client: Client, image: ImageServer, callback_url: str | None, **extra: Any) -> str:
    body = {
        "image_url": image.url("/tile.png"),
        "algorithm_name": "test_async",
        "parameters": QUICK,
        "callback_url": callback_url,
        "callback_token": "job-token",
        **extra,
    }
    response = await client.post("/jobs", json=body)
    assert response.status == 202, await response.text()
    job_id: str = (await response.json())["job_id"]
    return job_id


async def start(aiohttp_client: MakeClient, data_dir: Path, **settings: Any) -> Client:
    return await aiohttp_client(create_app(make_settings(data_dir, **settings)))


async def test_signed_retries_share_the_id_and_each_verifies_for_its_own_timestamp(
    aiohttp_client: MakeClient, tmp_path: Path, image_server: ImageServer, receiver: Receiver
) -> None:
    # Delays over a second, so each attempt has its own (whole-second) timestamp.
    client = await start(
        aiohttp_client, tmp_path, webhook_secret=SECRET, webhook_retry_schedule=(1.2, 1.2)
    )
    receiver.script.extend([500, 503])
    job_id = await submit(client, image_server, receiver.url)
    attempts = await receiver.wait_for(3)
    state = (await wait_for_callback(client, job_id, "Delivered"))["callback"]

    verifier = Webhook(SECRET)
    ids = {a.headers["webhook-id"] for a in attempts}
    assert ids == {state["delivery_id"]}, "webhook-id is the delivery id, stable across retries"
    stamps = [int(a.headers["webhook-timestamp"]) for a in attempts]
    assert stamps == sorted(set(stamps)), "every attempt is signed at its own time"
    for attempt in attempts:
        assert attempt.headers["Authorization"] == "Bearer job-token"
        assert attempt.headers["webhook-signature"].startswith("v1,")
        payload = verifier.verify(attempt.raw, attempt.headers)
        assert payload["properties"]["job_id"] == job_id
        assert abs(int(attempt.headers["webhook-timestamp"]) - attempt.at) < 2
    # A signature is bound to its timestamp: replaying it under another one fails.
    later = attempts[1].headers["webhook-timestamp"]
    replayed = {**attempts[0].headers, "webhook-timestamp": later}
    with pytest.raises(WebhookVerificationError):
        verifier.verify(attempts[0].raw, replayed)
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + base64.b64encode(b"another key").decode()).verify(
            attempts[0].raw, attempts[0].headers
        )
    assert [a["status_code"] for a in state["attempts"]] == [500, 503, 200]


async def test_without_a_secret_callbacks_are_not_signed_but_carry_their_id(
    client: Client, image_server: ImageServer, receiver: Receiver
) -> None:
    job_id = await submit(client, image_server, receiver.url)
    (attempt,) = await receiver.wait_for(1)
    assert "webhook-signature" not in attempt.headers
    state = (await wait_for_callback(client, job_id, "Delivered"))["callback"]
    assert attempt.headers["webhook-id"] == state["delivery_id"]
    assert attempt.headers["Authorization"] == "Bearer job-token"
    assert json.loads(attempt.raw)["type"] == "Feature"


async def test_retries_resume_after_a_restart_with_the_same_delivery_id(
    aiohttp_client: MakeClient, tmp_path: Path, image_server: ImageServer, receiver: Receiver
) -> None:
    schedule = (0.3,) * 20
    first = await start(aiohttp_client, tmp_path, webhook_retry_schedule=schedule)
    receiver.script.extend([500] * 1000)
    job_id = await submit(first, image_server, receiver.url)
    await receiver.wait_for(2)
    before = (await wait_for_job(first, job_id))["callback"]
    await first.close()
    failed_while_up = len(receiver.received)
    assert before["state"] == "Pending"

    receiver.script.clear()
    second = await start(aiohttp_client, tmp_path, webhook_retry_schedule=schedule)
    after = (await wait_for_callback(second, job_id, "Delivered"))["callback"]
    assert after["delivery_id"] == before["delivery_id"]
    assert len(receiver.received) == failed_while_up + 1
    assert {r.headers["webhook-id"] for r in receiver.received} == {before["delivery_id"]}
    codes = [a["status_code"] for a in after["attempts"]]
    assert codes[-1] == 200
    assert codes[:-1] == [500] * (len(codes) - 1)
    assert len(codes) >= 3, "the attempts made before the restart are kept"


async def test_a_redirect_is_a_failed_attempt_and_is_not_followed(
    client: Client, image_server: ImageServer, receiver: Receiver
) -> None:
    target = receiver.url_for("/elsewhere")
    receiver.script.extend([(307, target)] * 10)
    job_id = await submit(client, image_server, receiver.url)
    state = (await wait_for_callback(client, job_id, "Failed"))["callback"]
    assert len(state["attempts"]) == 4, "first attempt plus the three retries configured"
    assert {a["status_code"] for a in state["attempts"]} == {307}
    assert "redirects are not followed" in state["attempts"][0]["error"]
    assert receiver.elsewhere == []


async def test_410_gone_stops_the_retries(
    client: Client, image_server: ImageServer, receiver: Receiver
) -> None:
    receiver.script.extend([410, 500, 500])
    job_id = await submit(client, image_server, receiver.url)
    state = (await wait_for_callback(client, job_id, "Failed"))["callback"]
    assert [a["status_code"] for a in state["attempts"]] == [410]
    await asyncio.sleep(0.6)  # three retry delays of the test schedule
    assert len(receiver.received) == 1


async def test_each_attempt_has_a_time_limit(
    aiohttp_client: MakeClient,
    tmp_path: Path,
    image_server: ImageServer,
    receiver: Receiver,
    callback_receiver: Any,
) -> None:
    client = await start(aiohttp_client, tmp_path, webhook_timeout=0.5)
    receiver.script.append(HANG)
    hung = await submit(client, image_server, receiver.url)
    await receiver.wait_for(1)
    # While one receiver hangs, another job's callback goes out at once.
    started = time.monotonic()
    other = await submit(client, image_server, callback_receiver.url)
    await wait_for_callback(client, other, "Delivered")
    assert time.monotonic() - started < 5
    state = (await wait_for_callback(client, hung, "Delivered"))["callback"]
    # On a loaded machine a later attempt may also run out of its 0.5 s;
    # each one that did is a timeout, and the last one got through.
    *timed_out, last = state["attempts"]
    assert timed_out
    for attempt in timed_out:
        assert attempt["status_code"] is None
        assert attempt["error"] == "timed out after 0.5 s"
        assert 0.4 < attempt["duration"] < 3
    assert last["status_code"] == 200
