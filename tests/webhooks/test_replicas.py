"""Two service replicas on one PostgreSQL database send each callback once.

Two real apps, each with its own store, dispatcher and outbox, on one database
(a fresh schema), finish jobs submitted to either and call one loopback receiver
back; every job's callback must arrive exactly once.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from primaa.app import create_app
from primaa.store.sql import SqlStore
from tests.conftest import ImageServer, make_settings
from tests.store.test_store_contract import NO_POSTGRES, POSTGRES_ENV, _postgres_schema
from tests.webhooks.conftest import Receiver

pytestmark = pytest.mark.postgres

Client = TestClient[Any, Any]
MakeClient = Callable[..., Awaitable[Client]]
JOBS = 240


@pytest.fixture
async def schema_store() -> AsyncIterator[Callable[[], SqlStore]]:
    """Stores on one fresh PostgreSQL schema: each call is another replica's store."""
    base_url = os.environ.get(POSTGRES_ENV)
    if not base_url:
        pytest.skip(NO_POSTGRES)
    schema, drop = await _postgres_schema(base_url)
    options = {"connect_args": {"server_settings": {"search_path": schema}}}
    yield lambda: SqlStore(base_url, engine_options=options)
    await drop()


async def replicas(
    aiohttp_client: MakeClient, tmp_path: Path, new_store: Callable[[], SqlStore], **settings: Any
) -> list[Client]:
    return [
        await aiohttp_client(
            create_app(make_settings(tmp_path / name, **settings), store=new_store())
        )
        for name in ("a", "b")
    ]


async def submit(client: Client, image: ImageServer, callback_url: str) -> str:
    body = {
        "image_url": image.url("/tile.png"),
        "algorithm_name": "test_async",
        "parameters": {"seconds": 0.0, "steps": 1},
        "callback_url": callback_url,
    }
    response = await client.post("/jobs", json=body)
    assert response.status == 202, await response.text()
    job_id: str = (await response.json())["job_id"]
    return job_id


async def test_two_replicas_send_each_callback_once(
    aiohttp_client: MakeClient,
    tmp_path: Path,
    image_server: ImageServer,
    receiver: Receiver,
    schema_store: Callable[[], SqlStore],
) -> None:
    clients = await replicas(aiohttp_client, tmp_path, schema_store)
    submitted = [await submit(clients[n % 2], image_server, receiver.url) for n in range(JOBS)]
    await receiver.wait_for(JOBS, within=120)
    # Every callback recorded Delivered, then a moment for a duplicate to show up.
    deadline = time.monotonic() + 60
    for job_id in submitted:
        while True:
            job = await (await clients[0].get(f"/jobs/{job_id}")).json()
            if job["callback"] and job["callback"]["state"] == "Delivered":
                break
            assert time.monotonic() < deadline, job
            await asyncio.sleep(0.05)
    await asyncio.sleep(1.5)
    received = collections.Counter(
        json.loads(r.raw)["properties"]["job_id"] for r in receiver.received
    )
    twice = {job_id: n for job_id, n in received.items() if n != 1}
    assert twice == {}
    assert set(received) == set(submitted)
    # Both replicas sent callbacks: the test is about two senders, not one.
    sent = [await attempts_sent(client) for client in clients]
    assert sum(sent) == JOBS
    assert min(sent) > 0, sent


async def attempts_sent(client: Client) -> float:
    """Callback attempts this replica made, from its ``/metrics``."""
    text = await (await client.get("/metrics")).text()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("primaa_webhook_attempts_total{")
    )
