"""SIGTERM with callbacks hanging: ``primaa serve`` stops within its bound, and what it
cut off is sent after the restart, once; a delivered callback is not sent again."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.conftest import CallbackReceiver, ImageServer
from tests.e2e.harness import TEST_PLUGINS, PrimaaServer, client, delivered, eventually, wait_job

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform == "win32", reason="uses POSIX signals and process groups"),
]


@pytest.fixture
async def stalling_server(
    aiohttp_server: Callable[..., Any],
) -> AsyncIterator[tuple[TestServer, list[str], asyncio.Event]]:
    """Callbacks that hang until ``answer`` is set; the job ids of those that arrived."""
    arrived: list[str] = []
    answer = asyncio.Event()

    async def callback(request: web.Request) -> web.Response:
        arrived.append(json.loads(await request.read())["properties"]["job_id"])
        await answer.wait()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/callback", callback)
    yield await aiohttp_server(app), arrived, answer
    answer.set()


async def test_sigterm_does_not_wait_for_hanging_callbacks_and_loses_none(
    primaa_server: PrimaaServer,
    image_server: ImageServer,
    callback_receiver: CallbackReceiver,
    stalling_server: tuple[TestServer, list[str], asyncio.Event],
) -> None:
    server, arrived, answer = stalling_server
    primaa_server.extra_env.update(
        {
            "PRIMAA_PLUGINS": TEST_PLUGINS,
            "PRIMAA_WEBHOOK_TIMEOUT": "300",
            "PRIMAA_WEBHOOK_SHUTDOWN_GRACE_SECONDS": "1",
        }
    )
    await primaa_server.start()
    job = {
        "image_url": image_server.url("/tile.png"),
        "algorithm_name": "test_async",
        "parameters": {"seconds": 0.0, "steps": 1},
    }
    async with client(primaa_server) as http:
        hanging, healthy = [], []
        for n in range(8):
            target = str(server.make_url("/callback")) if n < 6 else callback_receiver.url
            async with http.post("/jobs", json={**job, "callback_url": target}) as response:
                assert response.status == 202
                (hanging if n < 6 else healthy).append((await response.json())["job_id"])
        for job_id in healthy:
            await wait_job(http, job_id, delivered, "called back")
        await eventually(lambda: len(arrived) == 4, "4 callbacks hanging", within=20)

    primaa_server.send(signal.SIGTERM)
    signalled = time.monotonic()
    assert await primaa_server.wait_exit(within=60) == 0, primaa_server.log_text()
    took = time.monotonic() - signalled
    # The 300 s time limit of a callback does not hold the stop up: twice the 1 s
    # grace (the drain's flush, then the outbox's own), and a margin for a busy machine.
    assert took < 15, f"SIGTERM took {took:.1f} s with a 1 s callback grace"
    cut_off = len(arrived)

    answer.set()
    await primaa_server.start()
    async with client(primaa_server) as http:
        for job_id in hanging:
            done = await wait_job(http, job_id, delivered, "called back", within=30)
            assert len(done["callback"]["attempts"]) == 1, done["callback"]
    assert sorted(arrived[cut_off:]) == sorted(hanging)
    assert sorted(c.body["properties"]["job_id"] for c in callback_receiver.received) == sorted(
        healthy
    )
    print(f"\nSIGTERM with 4 callbacks hanging (300 s limit, 1 s grace) -> exit in {took:.2f} s")
