"""Shared fixtures: real loopback servers for images and callbacks, and the real app."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image

from primaa.app import create_app
from primaa.config import Settings, load_settings

TEST_PLUGINS = ("tests.support.algorithms",)
TERMINAL = {"Completed", "Failed", "Cancelled"}


def synthetic_he_png(width: int = 160, height: int = 120, seed: int = 0) -> bytes:
    """A pink (eosin) field with dark purple (hematoxylin) disks: enough to look like H&E."""
    rng = np.random.default_rng(seed)
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[...] = (236, 180, 210)
    yy, xx = np.mgrid[0:height, 0:width]
    for _ in range(12):
        cy, cx = rng.integers(10, height - 10), rng.integers(10, width - 10)
        image[(yy - cy) ** 2 + (xx - cx) ** 2 <= 36] = (70, 40, 120)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclasses.dataclass
class ImageServer:
    server: TestServer
    png: bytes

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))


@pytest.fixture
async def image_server(aiohttp_server: Callable[..., Any]) -> ImageServer:
    png = synthetic_he_png()

    async def tile(_: web.Request) -> web.Response:
        return web.Response(body=png, content_type="image/png")

    async def page(_: web.Request) -> web.Response:
        return web.Response(text="<html><body>not an image</body></html>", content_type="text/html")

    async def disguised(_: web.Request) -> web.Response:
        return web.Response(body=b"<html>not an image</html>", content_type="image/png")

    async def hang(_: web.Request) -> web.Response:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    app = web.Application()
    app.router.add_get("/tile.png", tile)
    app.router.add_get("/page.html", page)
    app.router.add_get("/hang.png", hang)
    app.router.add_get("/disguised.png", disguised)
    return ImageServer(await aiohttp_server(app), png)


@dataclasses.dataclass
class Callback:
    headers: dict[str, str]
    body: dict[str, Any]
    at: float


@dataclasses.dataclass
class CallbackReceiver:
    server: TestServer
    queue: asyncio.Queue[Callback]
    received: list[Callback]
    #: Status codes to answer with, in order; 200 once they are used up.
    answers: list[int]

    @property
    def url(self) -> str:
        return str(self.server.make_url("/callback"))

    async def next(self, within: float = 30.0) -> Callback:
        return await asyncio.wait_for(self.queue.get(), within)


@pytest.fixture
async def callback_receiver(aiohttp_server: Callable[..., Any]) -> CallbackReceiver:
    queue: asyncio.Queue[Callback] = asyncio.Queue()
    received: list[Callback] = []
    answers: list[int] = []

    async def callback(request: web.Request) -> web.Response:
        entry = Callback(dict(request.headers), await request.json(), time.time())
        received.append(entry)
        status = answers.pop(0) if answers else 200
        if status == 200:
            await queue.put(entry)
        return web.Response(status=status, text="noted")

    app = web.Application()
    app.router.add_post("/callback", callback)
    return CallbackReceiver(await aiohttp_server(app), queue, received, answers)


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "allow_private_urls": True,
        "workers": 1,
        "plugins": TEST_PLUGINS,
        "webhook_retry_schedule": (0.2, 0.2, 0.2),
        "log_format": "json",
        "lease_seconds": 5.0,
    }
    values.update(overrides)
    return load_settings(env={}, overrides=values)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data")


@pytest.fixture
async def client(aiohttp_client: Callable[..., Any], settings: Settings) -> TestClient[Any, Any]:
    client: TestClient[Any, Any] = await aiohttp_client(create_app(settings))
    return client


async def wait_for_callback(
    client: TestClient[Any, Any], job_id: str, state: str, within: float = 30.0
) -> dict[str, Any]:
    """Poll until the job's callback delivery is recorded in ``state``."""
    deadline = time.monotonic() + within
    while True:
        job: dict[str, Any] = await (await client.get(f"/jobs/{job_id}")).json()
        callback = job.get("callback")
        if callback is not None and callback["state"] == state:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"callback of job {job_id} is {callback} after {within} s")
        await asyncio.sleep(0.05)


async def wait_for_job(
    client: TestClient[Any, Any],
    job_id: str,
    statuses: set[str] = TERMINAL,
    within: float = 30.0,
) -> dict[str, Any]:
    """Poll ``GET /jobs/{id}`` until the job reaches one of ``statuses``."""
    deadline = time.monotonic() + within
    while True:
        response = await client.get(f"/jobs/{job_id}")
        body: dict[str, Any] = await response.json()
        if body.get("status") in statuses:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {body.get('status')} after {within} s")
        await asyncio.sleep(0.05)
