"""The outbox sends each due delivery once: when a claim overlaps a delivery in flight, and
when the claim of a dead outbox expires and another takes it over."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from primaa.jobs.model import Delivery, DeliveryStatus, Job
from primaa.store.memory import MemoryStore
from primaa.store.sql import SqlStore
from primaa.webhooks.outbox import Outbox, OutboxPolicy
from primaa.webhooks.retry import RetryPolicy
from primaa.webhooks.sender import WebhookSender
from tests.webhooks.conftest import Receiver


class SnapshotThenStall(MemoryStore):
    """Claims due deliveries, then takes a while to answer, as a busy database does."""

    async def claim_deliveries(
        self, *, holder: str, now: float, claim_seconds: float, limit: int, per_host: int
    ) -> list[Delivery]:
        rows = await super().claim_deliveries(
            holder=holder, now=now, claim_seconds=claim_seconds, limit=limit, per_host=per_host
        )
        await asyncio.sleep(0.3)
        return rows


async def test_a_delivery_that_settles_during_a_poll_is_not_sent_again(
    aiohttp_server: Callable[..., Any],
) -> None:
    received: collections.Counter[str] = collections.Counter()

    async def receive(request: web.Request) -> web.Response:
        received[(await request.json())["n"]] += 1
        await asyncio.sleep(0.1)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/cb", receive)
    server = await aiohttp_server(app)
    store = SnapshotThenStall()
    await store.open()

    async def queue(n: str) -> None:
        await store.create(Job(job_id=f"job-{n}", algorithm="a", parameters={}))
        await store.add_delivery(
            Delivery(
                delivery_id=f"msg-{n}",
                job_id=f"job-{n}",
                url=str(server.make_url("/cb")),
                payload={"n": n},
            )
        )
        outbox.wake()

    async with aiohttp.ClientSession() as session:
        outbox = Outbox(store, WebhookSender(session, timeout=5), RetryPolicy(schedule=(60,)))
        loop = asyncio.create_task(outbox.run())
        await queue("first")
        await asyncio.sleep(0.05)
        await queue("second")
        for _ in range(100):
            states = [
                d.status
                for n in ("first", "second")
                for d in await store.deliveries_for(f"job-{n}")
            ]
            if states == ["Delivered", "Delivered"]:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
    assert received == {"first": 1, "second": 1}


async def test_the_claim_of_a_dead_outbox_expires_and_another_sends_it(
    tmp_path: Path, receiver: Receiver
) -> None:
    store = SqlStore(f"sqlite:///{tmp_path / 'primaa.sqlite3'}")
    await store.open()
    try:
        await store.create(Job(job_id="job-1", algorithm="a", parameters={}))
        await store.add_delivery(
            Delivery(delivery_id="msg-1", job_id="job-1", url=receiver.url, payload={"n": 1})
        )
        # A replica claimed it, then died (kill -9): no attempt, no release.
        claimed = await store.claim_deliveries(
            holder="dead", now=time.time(), claim_seconds=1.0, limit=1, per_host=4
        )
        assert [d.delivery_id for d in claimed] == ["msg-1"]
        async with aiohttp.ClientSession() as session:
            outbox = Outbox(
                store,
                WebhookSender(session, timeout=5),
                RetryPolicy(schedule=(60,)),
                OutboxPolicy(poll_interval=0.1),
            )
            loop = asyncio.create_task(outbox.run())
            try:
                await receiver.wait_for(1)
                (delivery,) = await store.deliveries_for("job-1")
                while delivery.status is not DeliveryStatus.DELIVERED:
                    await asyncio.sleep(0.02)
                    (delivery,) = await store.deliveries_for("job-1")
            finally:
                outbox.stop()
                await loop
    finally:
        await store.close()
    assert len(receiver.received) == 1
    assert len(delivery.attempts) == 1
