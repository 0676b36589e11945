"""A replica claims CPU-bound jobs only as far as its workers start them soon, so a
replica that dies leaves few behind; I/O-bound jobs, and jobs of algorithms it does
not know, are claimed apart and never wait for that room."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from primaa.app import create_app
from primaa.jobs.model import Job
from primaa.store.factory import open_store_from_url
from tests.conftest import ImageServer, make_settings, wait_for_job
from tests.jobs.test_execution import submit, wait_until


async def test_a_replica_holds_no_more_cpu_bound_jobs_than_twice_its_workers(
    aiohttp_client: Callable[..., Any], tmp_path: Path, image_server: ImageServer
) -> None:
    settings = make_settings(tmp_path / "d", workers=1, io_concurrency=4)
    settings.data_dir.mkdir(parents=True)
    store = open_store_from_url(settings.resolved_database_url)
    await store.open()
    retired = Job(
        job_id="retired-1",
        algorithm="retired",
        parameters={},
        image_url=image_server.url("/tile.png"),
        created_at=time.time() + 3600,  # the newest: claimed after every other job
    )
    await store.create(retired)
    await store.close()

    client = await aiohttp_client(create_app(settings))
    cpu = [
        await submit(client, image_server, "test_sleep", parameters={"seconds": 60, "steps": 600})
        for _ in range(8)
    ]
    await wait_until(client, cpu[0], lambda job: job["progress"] > 0)
    await asyncio.sleep(settings.poll_interval + 0.5)  # claims woken by submissions, and a poll
    statuses = [(await (await client.get(f"/jobs/{job_id}")).json())["status"] for job_id in cpu]
    # One running, one fetching its image or waiting for the worker; before, the
    # replica held 2 x workers + io_concurrency = 6 of them.
    assert statuses == ["Running"] * 2 + ["Pending"] * 6

    io = await submit(client, image_server, "test_async", parameters={"seconds": 0.01, "steps": 1})
    assert (await wait_for_job(client, io))["status"] == "Completed"
    unknown = await wait_for_job(client, retired.job_id)
    assert unknown["status"] == "Failed"
    assert "unknown algorithm 'retired'" in unknown["error"]
    for job_id in cpu:
        await client.post(f"/jobs/{job_id}/cancel")
