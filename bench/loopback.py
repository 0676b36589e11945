"""The outside world of a job, on 127.0.0.1: an image server and a callback receiver.

Runs inside the bench driver's event loop, so callback arrival times and
submission times are read from the same clock.
"""

from __future__ import annotations

import asyncio
import collections
import io
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
from aiohttp import web
from PIL import Image

from bench.harness import REPO, free_port

NUCLEI_DIRS = (REPO.parent / "shared" / "data" / "nuclei-dev", REPO / "tests" / "data" / "nuclei")


def tiny_png(side: int = 16) -> bytes:
    """A small H&E-coloured PNG: decoding it costs next to nothing."""
    pixels = np.full((side, side, 3), (200, 150, 190), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def he_tiles(limit: int) -> tuple[list[bytes], Path]:
    """Up to ``limit`` 512x512 H&E PNGs from the nuclei dev set (or the test copy)."""
    for folder in NUCLEI_DIRS:
        pngs = sorted(folder.glob("*.png"))[:limit]
        if pngs:
            return [png.read_bytes() for png in pngs], folder
    raise SystemExit(f"no H&E PNGs in {' or '.join(map(str, NUCLEI_DIRS))}")


class Loopback:
    """``GET /img/{k}.png`` serves image ``k`` (mod count); ``POST /cb/{seq}`` notes a callback."""

    def __init__(self, images: Sequence[bytes]) -> None:
        self.images = list(images)
        self.port = free_port()
        self.arrived: dict[int, float] = {}
        #: Callbacks received per job, duplicates included.
        self.received: collections.Counter[int] = collections.Counter()
        #: The distinct messages (``webhook-id``) received per job: a message sent again
        #: (its sender died before it recorded the answer) keeps its id.
        self.messages: collections.defaultdict[int, set[str]] = collections.defaultdict(set)
        self.statuses: dict[int, str] = {}
        self._expected = 0
        self._all_in = asyncio.Event()
        self._waiters: list[tuple[int, asyncio.Event]] = []

    def image_url(self, k: int = 0) -> str:
        return f"http://127.0.0.1:{self.port}/img/{k}.png"

    def callback_url(self, seq: int) -> str:
        return f"http://127.0.0.1:{self.port}/cb/{seq}"

    def expect(self, count: int) -> None:
        """Forget earlier callbacks; :meth:`wait` returns once ``count`` more arrived."""
        self.arrived.clear()
        self.received.clear()
        self.messages.clear()
        self.statuses.clear()
        self._expected = count
        self._all_in.clear()

    async def wait_for(self, count: int) -> None:
        """Return once ``count`` jobs have called back."""
        reached = asyncio.Event()
        self._waiters.append((count, reached))
        self._wake_waiters()
        await reached.wait()

    def _wake_waiters(self) -> None:
        for count, reached in self._waiters:
            if len(self.arrived) >= count:
                reached.set()
        self._waiters = [(c, e) for c, e in self._waiters if not e.is_set()]

    async def wait(self, within: float) -> bool:
        try:
            await asyncio.wait_for(self._all_in.wait(), within)
        except TimeoutError:
            return False
        return True

    async def _image(self, request: web.Request) -> web.Response:
        k = int(request.match_info["k"])
        return web.Response(body=self.images[k % len(self.images)], content_type="image/png")

    async def _callback(self, request: web.Request) -> web.Response:
        seq = int(request.match_info["seq"])
        body = await request.json()
        self.arrived.setdefault(seq, time.monotonic())
        self.received[seq] += 1
        self.messages[seq].add(request.headers.get("webhook-id", ""))
        self.statuses[seq] = str(body.get("properties", {}).get("status"))
        if len(self.arrived) >= self._expected > 0:
            self._all_in.set()
        self._wake_waiters()
        return web.Response(text="noted")

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[Loopback]:
        app = web.Application()
        app.router.add_get("/img/{k}.png", self._image)
        app.router.add_post("/cb/{seq}", self._callback)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        try:
            yield self
        finally:
            await runner.cleanup()
