"""A receiver that hangs holds a few of the outbox's slots, never all of them; a stop
waits for callbacks in flight only so long, and nothing it cuts off is lost or sent twice.

Real loopback receivers, the real app or the real outbox on SQLite; the only time
bounds are generous ones (the hanging requests hang for minutes).
"""

from __future__ import annotations

import asyncio
import collections
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient

from primaa.app import create_app
from primaa.jobs.model import Delivery, DeliveryStatus, Job
from primaa.store.sql import SqlStore
from primaa.webhooks.outbox import Outbox, OutboxPolicy
from primaa.webhooks.retry import RetryPolicy
from primaa.webhooks.sender import WebhookSender
from tests.conftest import ImageServer, make_settings
from tests.webhooks.conftest import HangingReceiver, Receiver, until

Client = TestClient[Any, Any]
#: Longer than any test: a hanging request never times out while a test looks at it.
LONG = 600.0


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


async def test_a_hanging_receiver_does_not_delay_a_healthy_one(
    aiohttp_client: Callable[..., Awaitable[Client]],
    tmp_path: Path,
    image_server: ImageServer,
    hanging_receiver: HangingReceiver,
    receiver: Receiver,
) -> None:
    settings = make_settings(
        tmp_path, webhook_timeout=LONG, webhook_concurrency=16, webhook_concurrency_per_host=4
    )
    client = await aiohttp_client(create_app(settings))
    for _ in range(50):
        await submit(client, image_server, hanging_receiver.url)
    # The hanging receiver holds every place it may have before a healthy callback exists.
    await until(lambda: hanging_receiver.hanging == 4, "4 callbacks hanging")
    healthy = {await submit(client, image_server, receiver.url) for _ in range(20)}

    await receiver.wait_for(20, within=60)
    called_back = {json.loads(r.raw)["properties"]["job_id"] for r in receiver.received}
    assert called_back == healthy
    # Every healthy callback arrived while the hanging ones still hang, and the hanging
    # receiver never held more than its share of the slots.
    assert hanging_receiver.answered == []
    assert hanging_receiver.hanging == 4
    assert len(hanging_receiver.arrived) == 4


def _delivery(n: int, url: str) -> tuple[Job, Delivery]:
    job = Job(job_id=f"job-{n:03d}", algorithm="a", parameters={})
    return job, Delivery(delivery_id=f"msg-{n:03d}", job_id=job.job_id, url=url, payload={"n": n})


async def test_a_stop_cuts_hanging_callbacks_off_and_a_restart_sends_them_once(
    tmp_path: Path, hanging_receiver: HangingReceiver, receiver: Receiver
) -> None:
    store = SqlStore(f"sqlite:///{tmp_path / 'primaa.sqlite3'}")
    await store.open()
    hanging_ids, healthy_ids = [], []
    for n in range(9):
        url = hanging_receiver.url if n < 6 else receiver.url
        job, delivery = _delivery(n, url)
        await store.create(job)
        await store.add_delivery(delivery)
        (hanging_ids if n < 6 else healthy_ids).append(str(n))
    policy = OutboxPolicy(per_host=4, claim_seconds=LONG + 5, shutdown_grace=0.5)
    try:
        async with aiohttp.ClientSession() as session:
            sender = WebhookSender(session, timeout=LONG)
            first = Outbox(store, sender, RetryPolicy(), policy)
            running = asyncio.create_task(first.run())
            await receiver.wait_for(3)
            await until(lambda: hanging_receiver.hanging == 4, "4 callbacks hanging")
            first.stop()
            stopped_at = time.monotonic()
            await asyncio.wait_for(running, 30)
            took = time.monotonic() - stopped_at
            assert took < 10, f"a 0.5 s grace, yet the stop took {took:.1f} s"

            state = {
                d.delivery_id: (d.status, len(d.attempts))
                for n in range(9)
                for d in await store.deliveries_for(f"job-{n:03d}")
            }
            assert state == {
                **{f"msg-{int(n):03d}": (DeliveryStatus.PENDING, 0) for n in hanging_ids},
                **{f"msg-{int(n):03d}": (DeliveryStatus.DELIVERED, 1) for n in healthy_ids},
            }
            # The cut-off claims were given back: due again at once, not after they expire.
            again = await store.claim_deliveries(
                holder="peek", now=time.time(), claim_seconds=1, limit=10, per_host=10
            )
            assert sorted(d.payload["n"] for d in again) == list(range(6))
            await store.release_deliveries([d.delivery_id for d in again], holder="peek")

            # The restart: the receiver answers now.
            hanging_receiver.answer.set()
            cut_off = list(hanging_receiver.arrived)
            second = Outbox(store, sender, RetryPolicy(), policy)
            running = asyncio.create_task(second.run())
            await until(lambda: len(hanging_receiver.arrived) == len(cut_off) + 6, "resent")
            for n in range(6):
                (stored,) = await store.deliveries_for(f"job-{n:03d}")
                while stored.status is DeliveryStatus.PENDING:
                    await asyncio.sleep(0.02)
                    (stored,) = await store.deliveries_for(f"job-{n:03d}")
                assert (stored.status, len(stored.attempts)) == (DeliveryStatus.DELIVERED, 1)
            second.stop()
            await asyncio.wait_for(running, 30)
    finally:
        await store.close()
    resent = collections.Counter(hanging_receiver.arrived[len(cut_off) :])
    assert resent == dict.fromkeys(hanging_ids, 1)
    assert sorted(str(json.loads(r.raw)["n"]) for r in receiver.received) == healthy_ids
