"""A service whose job was taken over (its lease expired, another process claimed it)
drops its result with one warning line, and leaves the job to the new holder."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from structlog.testing import capture_logs

from primaa.app import create_app
from primaa.appkeys import STORE
from primaa.jobs.model import JobStatus
from tests.conftest import ImageServer, make_settings, wait_for_job

Client = TestClient[Any, Any]


@pytest.mark.parametrize("inline_max", [1_048_576, 0], ids=["in the store", "in a file"])
async def test_a_run_that_lost_its_lease_drops_its_result(
    aiohttp_client: Callable[..., Awaitable[Client]],
    tmp_path: Path,
    image_server: ImageServer,
    inline_max: int,
) -> None:
    # A slow poll: the service must not claim the job back while the test hands it over.
    settings = make_settings(tmp_path, poll_interval=60.0, result_inline_max_bytes=inline_max)
    client = await aiohttp_client(create_app(settings))
    store = client.app[STORE]
    body = {
        "image_url": image_server.url("/tile.png"),
        "algorithm_name": "test_async",
        "parameters": {"seconds": 1.5, "steps": 30},
    }
    response = await client.post("/jobs", json=body)
    job_id = (await response.json())["job_id"]
    await wait_for_job(client, job_id, {"Running"})

    with capture_logs() as logs:
        # As if this service had stalled past its lease: swept, and claimed elsewhere.
        await store.requeue_expired(now=math.inf, max_attempts=5)
        (taken,) = await store.claim(
            lease_owner="primaa-elsewhere", lease_seconds=600, limit=1, now=time.time()
        )
        assert taken.job_id == job_id
        deadline = time.monotonic() + 30
        while not any(e["event"] == "job_outcome_dropped" for e in logs):
            assert time.monotonic() < deadline, logs
            await asyncio.sleep(0.05)

    stored = await store.get(job_id)
    assert stored is not None
    assert (stored.status, stored.lease_owner) == (JobStatus.RUNNING, "primaa-elsewhere")
    assert await store.get_result(job_id) is None
    assert list((tmp_path / "results").glob("*")) == [], "a dropped result leaves no file"
    dropped = [e for e in logs if e["event"] == "job_outcome_dropped"]
    assert dropped == [
        {
            "event": "job_outcome_dropped",
            "job_id": job_id,
            "reason": "lease lost",
            "log_level": "warning",
        }
    ]
    assert not [e for e in logs if e["log_level"] in {"error", "critical"} or "exc_info" in e]
    assert not [e for e in logs if e["event"] == "job_completed"]
