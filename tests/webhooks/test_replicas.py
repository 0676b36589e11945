"""Two service replicas on one PostgreSQL database: each callback sent once, work
queued on one replica wakes the other at once (LISTEN/NOTIFY), not at its next poll,
and a large result's file (in the data_dir they share) is served by either.

Two real apps, each with its own store, dispatcher and outbox, on one database
(a fresh schema), with real loopback receivers.
"""

from __future__ import annotations

import asyncio
import collections
import gzip
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from primaa.app import create_app
from primaa.appkeys import DISPATCHER, NOTIFICATIONS
from primaa.fastjson import dumps
from primaa.store.notifications import DELIVERIES_CHANNEL, JOBS_CHANNEL
from primaa.store.sql import SqlStore
from tests.conftest import ImageServer, make_settings, wait_for_job
from tests.store.test_store_contract import NO_POSTGRES, POSTGRES_ENV, _postgres_schema
from tests.webhooks.conftest import HangingReceiver, Receiver, until

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
    aiohttp_client: MakeClient,
    tmp_path: Path,
    new_store: Callable[[], SqlStore],
    **settings: Any,
) -> list[Client]:
    return [
        await aiohttp_client(
            create_app(make_settings(tmp_path / name, **settings), store=new_store())
        )
        for name in ("a", "b")
    ]


async def submit(
    client: Client, image: ImageServer, callback_url: str | None, seconds: float = 0.0
) -> str:
    body = {
        "image_url": image.url("/tile.png"),
        "algorithm_name": "test_async",
        "parameters": {"seconds": seconds, "steps": 1},
        "callback_url": callback_url,
    }
    response = await client.post("/jobs", json=body)
    assert response.status == 202, await response.text()
    job_id: str = (await response.json())["job_id"]
    return job_id


async def test_two_replicas_send_each_callback_once(
    schema_store: Callable[[], SqlStore],
    aiohttp_client: MakeClient,
    tmp_path: Path,
    image_server: ImageServer,
    receiver: Receiver,
) -> None:
    clients = await replicas(aiohttp_client, tmp_path, schema_store)
    submitted = [await submit(clients[n % 2], image_server, receiver.url) for n in range(JOBS)]
    await receiver.wait_for(JOBS, within=120)
    # Every callback recorded Delivered, then a moment for a duplicate to show up.
    for job_id in submitted:
        await until_delivered(clients[0], job_id)
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


#: Longer than any test: without a notification, the idle replica would not look.
SLOW_POLL = 120.0


async def status(client: Client, job_id: str) -> str:
    body: dict[str, Any] = await (await client.get(f"/jobs/{job_id}")).json()
    return str(body["status"])


async def test_a_job_submitted_to_a_busy_replica_starts_on_an_idle_one_at_once(
    schema_store: Callable[[], SqlStore],
    aiohttp_client: MakeClient,
    tmp_path: Path,
    image_server: ImageServer,
) -> None:
    # Room for 1 I/O-bound job per replica (its 1 I/O slot); polls too slow to matter.
    settings = make_settings(tmp_path / "a", io_concurrency=1, poll_interval=SLOW_POLL)
    busy = await aiohttp_client(create_app(settings, store=schema_store()))
    held = [await submit(busy, image_server, None, seconds=600)]
    for job_id in held:
        await until_status(busy, job_id, "Running")
    idle_settings = make_settings(tmp_path / "b", io_concurrency=1, poll_interval=SLOW_POLL)
    idle = await aiohttp_client(create_app(idle_settings, store=schema_store()))
    await asyncio.wait_for(idle.app[NOTIFICATIONS].listening.wait(), 30)

    job_id = await submit(busy, image_server, None, seconds=600)
    await until_status(busy, job_id, "Running", within=20)
    stored = await idle.app[DISPATCHER]._store.get(job_id)
    assert stored is not None
    assert stored.lease_owner == idle.app[DISPATCHER].lease_owner
    assert idle.app[NOTIFICATIONS].received[JOBS_CHANNEL] >= 1


async def test_a_callback_queued_on_a_busy_replica_is_sent_by_an_idle_one_at_once(
    schema_store: Callable[[], SqlStore],
    aiohttp_client: MakeClient,
    tmp_path: Path,
    image_server: ImageServer,
    hanging_receiver: HangingReceiver,
    receiver: Receiver,
) -> None:
    slow = {"poll_interval": SLOW_POLL, "webhook_timeout": 600.0}
    busy = await aiohttp_client(
        create_app(
            make_settings(tmp_path / "a", webhook_concurrency=1, **slow), store=schema_store()
        )
    )
    # The busy replica's one callback slot hangs.
    await submit(busy, image_server, hanging_receiver.url)
    await until(lambda: hanging_receiver.hanging == 1, "a callback hanging")
    idle = await aiohttp_client(
        create_app(make_settings(tmp_path / "b", **slow), store=schema_store())
    )
    await asyncio.wait_for(idle.app[NOTIFICATIONS].listening.wait(), 30)

    job_id = await submit(busy, image_server, receiver.url)
    (callback,) = await receiver.wait_for(1, within=20)
    assert json.loads(callback.raw)["properties"]["job_id"] == job_id
    await until_delivered(busy, job_id)
    assert await attempts_sent(idle) == 1
    assert idle.app[NOTIFICATIONS].received[DELIVERIES_CHANNEL] >= 1
    assert hanging_receiver.hanging == 1


async def until_status(client: Client, job_id: str, wanted: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while (found := await status(client, job_id)) != wanted:
        assert time.monotonic() < deadline, f"job {job_id} still {found} after {within} s"
        await asyncio.sleep(0.02)


async def until_delivered(client: Client, job_id: str, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while True:
        job = await (await client.get(f"/jobs/{job_id}")).json()
        if job["callback"] and job["callback"]["state"] == "Delivered":
            return
        assert time.monotonic() < deadline, job
        await asyncio.sleep(0.05)


async def test_a_large_result_written_by_one_replica_is_served_by_both(
    schema_store: Callable[[], SqlStore],
    aiohttp_client: MakeClient,
    tmp_path: Path,
    image_server: ImageServer,
) -> None:
    shared = tmp_path / "shared"  # one data_dir, as deploy.md asks of replicas
    one, other = [
        await aiohttp_client(
            create_app(make_settings(shared, result_inline_max_bytes=0), store=schema_store())
        )
        for _ in range(2)
    ]
    job_id = await submit(one, image_server, None)
    await wait_for_job(one, job_id)
    (file,) = shared.glob("results/*.geojson.gz")
    for replica in (one, other):
        answer = await replica.get(f"/jobs/{job_id}/result")
        assert answer.status == 200, await answer.text()
        assert answer.headers["Content-Encoding"] == "gzip"
        assert dumps(await answer.json()) == gzip.decompress(file.read_bytes())
    assert (await other.delete(f"/jobs/{job_id}")).status == 204
    assert not file.exists()
    assert (await one.get(f"/jobs/{job_id}/result")).status == 404
