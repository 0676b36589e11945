"""Loopback callback receivers: a programmable one that keeps the raw body of every
request, and one that hangs until told to answer."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

#: What the receiver does with one request: answer a status, hang, or redirect.
Behaviour = int | str | tuple[str, str]
HANG = "hang"


@dataclasses.dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    raw: bytes
    at: float


@dataclasses.dataclass
class Receiver:
    server: TestServer
    received: list[Received]
    #: Behaviours for successive requests to ``/callback``; 200 once used up.
    script: list[Behaviour]
    #: Requests to ``/elsewhere`` (a redirect target that must never be reached).
    elsewhere: list[Received]

    @property
    def url(self) -> str:
        return str(self.server.make_url("/callback"))

    def url_for(self, path: str) -> str:
        return str(self.server.make_url(path))

    async def wait_for(self, count: int, within: float = 20.0) -> list[Received]:
        """Wait until ``/callback`` has seen ``count`` requests."""
        deadline = time.monotonic() + within
        while len(self.received) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.received)} callbacks after {within} s")
            await asyncio.sleep(0.02)
        return self.received


@pytest.fixture
async def receiver(aiohttp_server: Callable[..., Any]) -> AsyncIterator[Receiver]:
    released = asyncio.Event()
    received: list[Received] = []
    elsewhere: list[Received] = []
    script: list[Behaviour] = []

    async def callback(request: web.Request) -> web.Response:
        entry = Received(request.path, dict(request.headers), await request.read(), time.time())
        received.append(entry)
        behaviour = script.pop(0) if script else 200
        if behaviour == HANG:
            # Until the test ends, so the server's shutdown does not wait on it.
            await released.wait()
        if isinstance(behaviour, tuple):
            status, location = int(behaviour[0]), behaviour[1]
            return web.Response(status=status, headers={"Location": location})
        assert isinstance(behaviour, int)
        return web.Response(status=behaviour, text="noted")

    async def other(request: web.Request) -> web.Response:
        elsewhere.append(Received(request.path, dict(request.headers), await request.read(), 0))
        return web.Response(text="should never be called")

    app = web.Application()
    app.router.add_post("/callback", callback)
    app.router.add_route("*", "/elsewhere", other)
    yield Receiver(await aiohttp_server(app), received, script, elsewhere)
    released.set()


@dataclasses.dataclass
class HangingReceiver:
    """Takes every callback and answers none until ``answer`` is set."""

    server: TestServer
    answer: asyncio.Event
    #: What each request that arrived / got its answer was about (its job, or ``n``).
    arrived: list[str]
    answered: list[str]

    @property
    def url(self) -> str:
        return str(self.server.make_url("/callback"))

    @property
    def hanging(self) -> int:
        return len(self.arrived) - len(self.answered)


@pytest.fixture
async def hanging_receiver(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> AsyncIterator[HangingReceiver]:
    answer = asyncio.Event()
    arrived: list[str] = []
    answered: list[str] = []

    async def callback(request: web.Request) -> web.Response:
        body = await request.json()
        arrived.append(str(body["n"]) if "n" in body else body["properties"]["job_id"])
        await answer.wait()
        answered.append(arrived[-1])
        return web.Response(text="late but fine")

    app = web.Application()
    app.router.add_post("/callback", callback)
    receiver = HangingReceiver(await aiohttp_server(app), answer, arrived, answered)
    yield receiver
    answer.set()


async def until(check: Callable[[], bool], what: str, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"still not {what} after {within} s")
        await asyncio.sleep(0.02)
