"""How jobs run: progress, cancellation, crashes, time limits, and surviving a restart."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from primaa.app import create_app
from primaa.jobs.model import Job, JobStatus
from primaa.store.factory import open_store_from_url
from tests.conftest import ImageServer, make_settings, wait_for_job

Client = TestClient[Any, Any]


async def submit(client: Client, image: ImageServer, algorithm: str, **extra: Any) -> str:
    response = await client.post(
        "/jobs",
        json={"image_url": image.url("/tile.png"), "algorithm_name": algorithm, **extra},
    )
    assert response.status == 202, await response.text()
    job_id: str = (await response.json())["job_id"]
    return job_id


async def wait_until(client: Client, job_id: str, check: Callable[[dict[str, Any]], bool]) -> Any:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        job = await (await client.get(f"/jobs/{job_id}")).json()
        if check(job):
            return job
        await asyncio.sleep(0.05)
    raise AssertionError(f"condition not met for job {job_id}: {job}")


async def test_progress_shows_while_running(client: Client, image_server: ImageServer) -> None:
    job_id = await submit(
        client, image_server, "test_sleep", parameters={"seconds": 3, "steps": 30}
    )
    running = await wait_until(
        client, job_id, lambda j: j["status"] == "Running" and 0 < j["progress"] < 100
    )
    assert running["attempts"] == 1
    done = await wait_for_job(client, job_id)
    assert done["status"] == "Completed"
    assert done["progress"] == 100


async def test_cancelling_a_running_job_stops_it_at_its_next_progress_report(
    client: Client, image_server: ImageServer
) -> None:
    job_id = await submit(
        client, image_server, "test_sleep", parameters={"seconds": 60, "steps": 600}
    )
    await wait_until(client, job_id, lambda j: j["progress"] > 0)
    started = time.monotonic()
    response = await client.post(f"/jobs/{job_id}/cancel")
    assert response.status == 202
    assert (await response.json())["cancel_requested"] is True
    done = await wait_for_job(client, job_id)
    assert done["status"] == "Cancelled"
    assert time.monotonic() - started < 2.0
    result = await client.get(f"/jobs/{job_id}/result")
    assert result.status == 409

    follower = await submit(
        client, image_server, "test_sleep", parameters={"seconds": 0.01, "steps": 1}
    )
    assert (await wait_for_job(client, follower))["status"] == "Completed", "the worker is free"


async def test_cancelling_queued_jobs_is_immediate(
    aiohttp_client: Callable[..., Any], tmp_path: Path, image_server: ImageServer
) -> None:
    client = await aiohttp_client(create_app(make_settings(tmp_path / "d", io_concurrency=1)))
    blocker = await submit(
        client, image_server, "test_sleep", parameters={"seconds": 60, "steps": 600}
    )
    await wait_until(client, blocker, lambda j: j["progress"] > 0)
    queued = [
        await submit(client, image_server, "test_sleep", parameters={"seconds": 1})
        for _ in range(4)
    ]
    statuses = {(await (await client.get(f"/jobs/{q}")).json())["status"] for q in queued}
    assert statuses == {"Running", "Pending"}, "some wait for a slot, some were never claimed"
    for job_id in queued:
        response = await client.post(f"/jobs/{job_id}/cancel")
        assert response.status == 202
    for job_id in queued:
        done = await wait_for_job(client, job_id, within=1.0)
        assert done["status"] == "Cancelled"
    await client.post(f"/jobs/{blocker}/cancel")
    assert (await wait_for_job(client, blocker))["status"] == "Cancelled"
    again = await client.post(f"/jobs/{blocker}/cancel")
    assert (await again.json())["status"] == "Cancelled", "cancelling a final job changes nothing"


async def test_worker_crash_fails_only_that_job_and_the_service_goes_on(
    client: Client, image_server: ImageServer
) -> None:
    crash = await submit(client, image_server, "test_crash")
    done = await wait_for_job(client, crash, within=60)
    assert done["status"] == "Failed"
    assert done["error"] == "the worker process died (exit code 3) while running this job"
    assert done["attempts"] == 1, "a job that kills its worker is not retried"

    after = await submit(client, image_server, "test_sleep", parameters={"seconds": 0.01})
    assert (await wait_for_job(client, after, within=60))["status"] == "Completed"


async def test_time_limit_fails_the_job_and_frees_the_worker(
    client: Client, image_server: ImageServer
) -> None:
    job_id = await submit(
        client, image_server, "test_sleep", parameters={"seconds": 60, "steps": 600}, timeout=1
    )
    done = await wait_for_job(client, job_id)
    assert done["status"] == "Failed"
    assert done["error"] == "timed out after 1 s"
    follower = await submit(client, image_server, "test_sleep", parameters={"seconds": 0.01})
    finished = await wait_for_job(client, follower, within=5)
    assert finished["status"] == "Completed"


async def test_io_bound_algorithms_run_on_the_event_loop_and_cpu_bound_in_workers(
    client: Client, image_server: ImageServer
) -> None:
    io_job = await submit(client, image_server, "test_async", parameters={"seconds": 0.01})
    cpu_job = await submit(client, image_server, "test_sleep", parameters={"seconds": 0.01})
    for job_id in (io_job, cpu_job):
        assert (await wait_for_job(client, job_id))["status"] == "Completed"
    io_pid = (await (await client.get(f"/jobs/{io_job}/result")).json())["properties"]
    cpu_pid = (await (await client.get(f"/jobs/{cpu_job}/result")).json())["properties"]
    assert io_pid["measurements"]["pid"] == os.getpid()
    assert cpu_pid["measurements"]["pid"] != os.getpid()


async def test_an_algorithm_error_fails_the_job_with_its_message(
    client: Client, image_server: ImageServer
) -> None:
    job_id = await submit(client, image_server, "test_fail")
    done = await wait_for_job(client, job_id)
    assert done["status"] == "Failed"
    assert done["error"] == "the algorithm failed: ValueError: boom"
    assert done["attempts"] == 1, "an algorithm's own error is not retried"


async def test_an_unreachable_image_fails_quickly_with_the_cause(
    aiohttp_client: Callable[..., Any], tmp_path: Path, image_server: ImageServer
) -> None:
    settings = make_settings(tmp_path / "d", fetch_read_timeout=0.5, fetch_connect_timeout=0.5)
    client = await aiohttp_client(create_app(settings))
    response = await client.post(
        "/jobs", json={"image_url": image_server.url("/hang.png"), "algorithm_name": "test_fail"}
    )
    job_id = (await response.json())["job_id"]
    done = await wait_for_job(client, job_id, within=5)
    assert done["status"] == "Failed"
    assert "timed out" in done["error"]


async def test_jobs_results_and_deliveries_survive_a_restart(
    aiohttp_client: Callable[..., Any], tmp_path: Path, image_server: ImageServer
) -> None:
    settings = make_settings(tmp_path / "d")
    first = await aiohttp_client(create_app(settings))
    job_id = await submit(first, image_server, "poi_detection")
    before = await wait_for_job(first, job_id)
    result_before = await (await first.get(f"/jobs/{job_id}/result")).json()
    await first.close()

    second = await aiohttp_client(create_app(settings))
    after = await (await second.get(f"/jobs/{job_id}")).json()
    assert after["status"] == "Completed"
    assert after["finished_at"] == before["finished_at"]
    assert await (await second.get(f"/jobs/{job_id}/result")).json() == result_before


async def test_jobs_left_running_by_a_dead_process_run_again_at_start_up(
    aiohttp_client: Callable[..., Any], tmp_path: Path, image_server: ImageServer
) -> None:
    settings = make_settings(tmp_path / "d", lease_seconds=3600)
    settings.data_dir.mkdir(parents=True)
    store = open_store_from_url(settings.resolved_database_url)
    await store.open()
    orphan = Job(
        job_id="orphan-1",
        algorithm="test_sleep",
        parameters={"seconds": 0.01, "steps": 1},
        image_url=image_server.url("/tile.png"),
    )
    waiting = orphan.evolve(job_id="waiting-1")
    await store.create(orphan)
    await store.create(waiting)
    claimed = await store.claim(
        lease_owner="dead-process", lease_seconds=3600, limit=1, now=time.time()
    )
    assert [j.job_id for j in claimed] == ["orphan-1"]
    await store.close()

    client = await aiohttp_client(create_app(settings))
    for job_id, attempts in (("orphan-1", 2), ("waiting-1", 1)):
        done = await wait_for_job(client, job_id)
        assert done["status"] == JobStatus.COMPLETED
        assert done["attempts"] == attempts
