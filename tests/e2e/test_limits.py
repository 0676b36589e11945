"""Memory stays flat whatever a client sends: an oversized body is refused as it streams."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.e2e.harness import PrimaaServer, get_json

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform != "linux", reason="reads the server's RSS from /proc"),
]

BODY_BYTES = 50 * 1024 * 1024
CHUNK = 64 * 1024


async def test_a_50_mb_body_gets_413_without_being_buffered(primaa_server: PrimaaServer) -> None:
    await primaa_server.start()
    before = primaa_server.rss_kib()
    peak = before
    sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent, peak
        chunk = b"[" + b"0," * (CHUNK // 2 - 1) + b"0"
        while sent < BODY_BYTES:
            yield chunk
            sent += len(chunk)
            if sent % (4 * 1024 * 1024) < CHUNK:
                peak = max(peak, primaa_server.rss_kib())
                await asyncio.sleep(0)

    status = None
    error: dict[str, object] = {}
    async with aiohttp.ClientSession(primaa_server.url) as http:
        # The server may answer and close before the client has written everything:
        # then writing fails, and the answer is what was read, if anything.
        with contextlib.suppress(aiohttp.ClientError):
            async with http.post(
                "/jobs", data=body(), headers={"Content-Type": "application/json"}
            ) as response:
                status = response.status
                error = await response.json()
        after = primaa_server.rss_kib()
        health = await get_json(http, "/health")
    grew_mib = (max(peak, after) - before) / 1024
    print(
        f"\n50 MiB body: answered {status} after {sent / 2**20:.1f} MiB sent;"
        f" server RSS {before / 1024:.1f} MiB before, peak sampled {peak / 1024:.1f} MiB,"
        f" {after / 1024:.1f} MiB after (grew {grew_mib:.1f} MiB)"
    )
    assert status == 413, error
    assert error["type"] == "too_large"
    assert grew_mib < 10
    assert health["status"] == "ok"
