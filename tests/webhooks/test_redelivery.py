"""``POST /jobs/{id}/callback``: a new message with the same payload, refused when it cannot be."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from standardwebhooks.webhooks import Webhook

from primaa.app import create_app
from primaa.appkeys import CLIENT_ID, MANAGER
from primaa.jobs.errors import JobNotFound
from primaa.jobs.manager import JobRequest
from tests.conftest import ImageServer, make_settings, wait_for_callback, wait_for_job
from tests.webhooks.conftest import Receiver
from tests.webhooks.test_callbacks import QUICK, SECRET, start, submit

Client = TestClient[Any, Any]
MakeClient = Callable[..., Awaitable[Client]]


async def test_redelivery_is_a_new_message_with_the_same_payload(
    aiohttp_client: MakeClient, tmp_path: Path, image_server: ImageServer, receiver: Receiver
) -> None:
    client = await start(aiohttp_client, tmp_path, webhook_secret=SECRET)
    job_id = await submit(client, image_server, receiver.url)
    first = (await wait_for_callback(client, job_id, "Delivered"))["callback"]

    response = await client.post(f"/jobs/{job_id}/callback")
    assert response.status == 202, await response.text()
    body = await response.json()
    assert body["job_id"] == job_id
    assert body["status"] == "Completed"
    assert body["callback"]["delivery_id"] != first["delivery_id"]
    assert body["callback"]["state"] == "Pending"

    original, again = await receiver.wait_for(2)
    assert again.raw == original.raw, "the same Feature"
    assert again.headers["webhook-id"] == body["callback"]["delivery_id"]
    Webhook(SECRET).verify(again.raw, again.headers)
    done = (await wait_for_callback(client, job_id, "Delivered"))["callback"]
    assert done["delivery_id"] == body["callback"]["delivery_id"]


async def test_redelivery_of_a_failed_job_sends_the_failure(
    client: Client, image_server: ImageServer, receiver: Receiver
) -> None:
    job_id = await submit(
        client, image_server, receiver.url, algorithm_name="test_fail", parameters={}
    )
    failed = await wait_for_callback(client, job_id, "Delivered")
    assert failed["status"] == "Failed"
    assert (await client.post(f"/jobs/{job_id}/callback")).status == 202
    original, again = await receiver.wait_for(2)
    feature = json.loads(again.raw)
    assert feature["geometry"] is None
    assert feature["properties"]["error"] == failed["error"]
    assert again.raw == original.raw


async def test_redelivery_refusals(
    client: Client, image_server: ImageServer, receiver: Receiver
) -> None:
    running = await submit(
        client, image_server, receiver.url, parameters={"seconds": 30, "steps": 300}
    )
    no_callback = await submit(client, image_server, None)
    await wait_for_job(client, no_callback)
    for job_id, status, words in [
        (running, 409, "only a finished job"),
        (no_callback, 409, "no callback URL"),
        ("no-such-job", 404, "no job"),
    ]:
        response = await client.post(f"/jobs/{job_id}/callback")
        assert response.status == status
        error = await response.json()
        assert error["code"] == status
        assert words in error["error"]
    await client.post(f"/jobs/{running}/cancel")
    assert receiver.received == [] or all(
        json.loads(r.raw)["properties"]["job_id"] == running for r in receiver.received
    )


async def test_redelivery_is_scoped_to_the_jobs_owner(
    aiohttp_client: MakeClient, tmp_path: Path, image_server: ImageServer, receiver: Receiver
) -> None:
    @web.middleware
    async def as_someone_else(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        request[CLIENT_ID] = "someone-else"
        return await handler(request)

    app = create_app(make_settings(tmp_path))
    app.middlewares.insert(0, as_someone_else)
    client = await aiohttp_client(app)
    manager = app[MANAGER]
    job = await manager.submit(
        JobRequest(
            algorithm="test_async",
            parameters=QUICK,
            image_url=image_server.url("/tile.png"),
            callback_url=receiver.url,
        ),
        client_id="the-client_id",
    )
    await receiver.wait_for(1)
    response = await client.post(f"/jobs/{job.job_id}/callback")
    assert response.status == 404
    with pytest.raises(JobNotFound):
        await manager.redeliver(job.job_id, client_id="someone-else")
    queued = await manager.redeliver(job.job_id, client_id="the-client_id")
    assert queued.job_id == job.job_id
    await receiver.wait_for(2)


async def test_redelivery_is_documented(client: Client) -> None:
    document = await (await client.get("/openapi.json")).json()
    operation = document["paths"]["/jobs/{job_id}/callback"]["post"]
    assert {"202", "404", "409"} <= set(operation["responses"])
    assert "delivery_id" in operation["description"]
