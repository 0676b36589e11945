"""LISTEN/NOTIFY between replicas on PostgreSQL: the triggers notify, the listener wakes
only for its own schema, and it comes back after losing its connection."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import sqlalchemy as sa

from primaa.jobs.model import Delivery, Job
from primaa.store.notifications import DELIVERIES_CHANNEL, JOBS_CHANNEL, PostgresNotifications
from primaa.store.sql import SqlStore
from tests.store.test_store_contract import NO_POSTGRES, POSTGRES_ENV, _postgres_schema

pytestmark = pytest.mark.postgres


async def _schema_store() -> tuple[SqlStore, Callable[[], Any]]:
    base_url = os.environ.get(POSTGRES_ENV)
    if not base_url:
        pytest.skip(NO_POSTGRES)
    schema, drop = await _postgres_schema(base_url)
    store = SqlStore(
        base_url, engine_options={"connect_args": {"server_settings": {"search_path": schema}}}
    )
    await store.open()

    async def close() -> None:
        await store.close()
        await drop()

    return store, close


@pytest.fixture
async def two_schemas() -> AsyncIterator[tuple[SqlStore, SqlStore]]:
    mine, close_mine = await _schema_store()
    other, close_other = await _schema_store()
    yield mine, other
    await close_mine()
    await close_other()


class Wakes:
    def __init__(self) -> None:
        self.count = {JOBS_CHANNEL: 0, DELIVERIES_CHANNEL: 0}
        self.changed = asyncio.Event()

    def on(self, channel: str) -> Callable[[], None]:
        def wake() -> None:
            self.count[channel] += 1
            self.changed.set()

        return wake

    async def until(self, channel: str, count: int) -> None:
        while self.count[channel] < count:
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), 20)


async def test_new_work_wakes_the_listeners_of_its_schema_only(
    two_schemas: tuple[SqlStore, SqlStore],
) -> None:
    mine, other = two_schemas
    listener = PostgresNotifications(mine.url, mine.engine_options["connect_args"])
    wakes = Wakes()
    for channel in (JOBS_CHANNEL, DELIVERIES_CHANNEL):
        listener.on(channel, wakes.on(channel))
    await listener.start()
    try:
        await asyncio.wait_for(listener.listening.wait(), 20)
        await wakes.until(JOBS_CHANNEL, 1)  # the look it takes when it starts listening
        start = dict(wakes.count)

        await other.create(Job(job_id="elsewhere", algorithm="a", parameters={}))
        await mine.create(Job(job_id="j1", algorithm="a", parameters={}))
        await wakes.until(JOBS_CHANNEL, start[JOBS_CHANNEL] + 1)
        assert listener.received == {JOBS_CHANNEL: 1}

        await mine.add_delivery(
            Delivery(delivery_id="d1", job_id="j1", url="http://cb.example/", payload={})
        )
        await wakes.until(DELIVERIES_CHANNEL, start[DELIVERIES_CHANNEL] + 1)
        # A job back to Pending (a lease expired) wakes the claimers too.
        await mine.claim(lease_owner="gone", lease_seconds=1, limit=1, now=100.0)
        await mine.requeue_expired(now=200.0, max_attempts=3)
        await wakes.until(JOBS_CHANNEL, start[JOBS_CHANNEL] + 2)
        assert listener.received == {JOBS_CHANNEL: 2, DELIVERIES_CHANNEL: 1}
    finally:
        await listener.close()


async def test_the_listener_comes_back_after_losing_its_connection(
    two_schemas: tuple[SqlStore, SqlStore],
) -> None:
    mine, _ = two_schemas
    listener = PostgresNotifications(mine.url, mine.engine_options["connect_args"])
    wakes = Wakes()
    listener.on(JOBS_CHANNEL, wakes.on(JOBS_CHANNEL))
    await listener.start()
    try:
        await asyncio.wait_for(listener.listening.wait(), 20)
        await wakes.until(JOBS_CHANNEL, 1)
        pid = listener.backend_pid
        assert pid is not None
        await mine.run(
            lambda conn: conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        )
        # Back: it looks once more for what it may have missed, and listens again.
        await wakes.until(JOBS_CHANNEL, 2)
        await asyncio.wait_for(listener.listening.wait(), 20)
        assert listener.backend_pid not in {None, pid}
        await mine.create(Job(job_id="after", algorithm="a", parameters={}))
        await wakes.until(JOBS_CHANNEL, 3)
        assert listener.received == {JOBS_CHANNEL: 1}
    finally:
        await listener.close()
