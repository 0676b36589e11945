"""Back-pressure: a bounded number of unfinished jobs, exact under a burst of submissions."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from primaa.app import create_app
from tests.conftest import ImageServer, make_settings, wait_for_job

Client = TestClient[Any, Any]


def _slow_job(image_server: ImageServer, seconds: float) -> dict[str, Any]:
    return {
        "image_url": image_server.url("/tile.png"),
        "algorithm_name": "test_async",
        "parameters": {"seconds": seconds, "steps": 10},
    }


async def _count_jobs(client: Client) -> int:
    body = await (await client.get("/jobs?limit=100")).json()
    return len(body["jobs"])


async def test_beyond_the_limit_submissions_get_429_until_jobs_finish(
    aiohttp_client: Callable[..., Any], tmp_path: Path, image_server: ImageServer
) -> None:
    settings = make_settings(tmp_path / "data", max_unfinished_jobs=5)
    client: Client = await aiohttp_client(create_app(settings))
    accepted = []
    for _ in range(5):
        response = await client.post("/jobs", json=_slow_job(image_server, 1.0))
        assert response.status == 202, await response.json()
        accepted.append((await response.json())["job_id"])

    for path, body in (
        ("/jobs", _slow_job(image_server, 0.1)),
        ("/job-submission", {"image_url": image_server.url("/tile.png"), "algorithm_name": "x"}),
    ):
        refused = await client.post(path, json=body | {"algorithm_name": "test_async"})
        assert refused.status == 429
        error = await refused.json()
        assert error["type"] == "too_many_jobs"
        assert error["code"] == 429
        assert int(refused.headers["Retry-After"]) > 0
    assert await _count_jobs(client) == 5

    for job_id in accepted:
        assert (await wait_for_job(client, job_id))["status"] == "Completed"
    again = await client.post("/jobs", json=_slow_job(image_server, 0.1))
    assert again.status == 202, await again.json()
    assert await _count_jobs(client) == 6


async def test_a_burst_of_concurrent_submissions_does_not_overshoot_the_limit(
    aiohttp_client: Callable[..., Any], tmp_path: Path, image_server: ImageServer
) -> None:
    settings = make_settings(tmp_path / "data", max_unfinished_jobs=20)
    client: Client = await aiohttp_client(create_app(settings))

    async def submit() -> int:
        response = await client.post("/jobs", json=_slow_job(image_server, 30))
        await response.read()
        return response.status

    statuses = await asyncio.gather(*(submit() for _ in range(100)))
    assert sorted(set(statuses)) == [202, 429]
    assert statuses.count(202) == 20
    assert await _count_jobs(client) == 20
