"""Two replicas on one PostgreSQL database; one dies (SIGKILL) or stalls (SIGSTOP) mid-load.

The survivor must run the dead replica's jobs once their leases expire, and the
dead replica must leave no process behind. A replica that was paused past its
leases and resumes must not finish the jobs the other one took over: each job
ends once, with the outcome of the run that held its lease.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import CallbackReceiver, ImageServer
from tests.e2e.harness import (
    JSON,
    TEST_PLUGINS,
    PrimaaServer,
    client,
    eventually,
    free_port,
    get_json,
    live_group_members,
)
from tests.support.postgres import scratch_database

POSTGRES_URL = os.environ.get("PRIMAA_TEST_POSTGRES_URL", "")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform == "win32", reason="uses POSIX signals and process groups"),
    pytest.mark.skipif(
        not POSTGRES_URL, reason="replicas share PostgreSQL: set PRIMAA_TEST_POSTGRES_URL"
    ),
]

JOBS = 24
LEASE_SECONDS = 2.0
SECRET = "whsec_" + base64.b64encode(b"replica-failover-test-signing-k!").decode()


@pytest.fixture
async def database_url() -> AsyncIterator[str]:
    pytest.importorskip("asyncpg")
    async with scratch_database(POSTGRES_URL) as url:
        yield url


@pytest.fixture
async def replicas(tmp_path: Path, database_url: str) -> AsyncIterator[list[PrimaaServer]]:
    servers = [
        PrimaaServer(
            data_dir=tmp_path / f"data-{n}",
            log_dir=tmp_path / f"logs-{n}",
            port=free_port(),
            extra_env={
                "PRIMAA_DATABASE_URL": database_url,
                "PRIMAA_PLUGINS": TEST_PLUGINS,
                "PRIMAA_LEASE_SECONDS": str(LEASE_SECONDS),
                "PRIMAA_MAX_ATTEMPTS": "5",
                # Signed callbacks carry their delivery id (``webhook-id``).
                "PRIMAA_WEBHOOK_SECRET": SECRET,
            },
        )
        for n in range(2)
    ]
    for server in servers:
        server.log_dir.mkdir()
    try:
        # The first runs the migrations; a test starts the second when it needs it.
        await servers[0].start()
        yield servers
    finally:
        for server in servers:
            if server.process is not None and server.process.returncode is None:
                server.send(signal.SIGCONT)
            await server.kill()


async def _submit(
    http: aiohttp.ClientSession, image: str, callback: str, seconds: float, n: int
) -> str:
    submission: JSON = {
        "image_url": image,
        "algorithm_name": "test_sleep",
        "parameters": {"seconds": seconds, "steps": 4},
        "callback_url": callback,
        "callback_token": f"t{n}",
    }
    async with http.post("/jobs", json=submission) as response:
        body: JSON = await response.json()
        assert response.status == 202, body
        job_id: str = body["job_id"]
        return job_id


async def _final_jobs(http: aiohttp.ClientSession, job_ids: list[str], within: float) -> list[JSON]:
    async def all_final() -> bool:
        for job_id in job_ids:
            job = await get_json(http, f"/jobs/{job_id}")
            if job["status"] in ("Pending", "Running"):
                return False
        return True

    deadline = asyncio.get_running_loop().time() + within
    while not await all_final():
        assert asyncio.get_running_loop().time() < deadline, "jobs still unfinished"
        await asyncio.sleep(0.1)
    return [await get_json(http, f"/jobs/{job_id}") for job_id in job_ids]


async def _delivered_jobs(
    http: aiohttp.ClientSession, job_ids: list[str], within: float
) -> list[JSON]:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        jobs = [await get_json(http, f"/jobs/{job_id}") for job_id in job_ids]
        if all(job["callback"]["state"] == "Delivered" for job in jobs):
            return jobs
        assert asyncio.get_running_loop().time() < deadline, "callbacks still undelivered"
        await asyncio.sleep(0.1)


def _callbacks_per_job(receiver: CallbackReceiver) -> collections.Counter[str]:
    return collections.Counter(c.body["properties"]["job_id"] for c in receiver.received)


async def test_a_killed_replicas_jobs_run_on_the_other_and_nothing_of_it_survives(
    replicas: list[PrimaaServer], image_server: ImageServer, callback_receiver: CallbackReceiver
) -> None:
    victim, survivor = replicas
    await survivor.start()
    image = image_server.url("/tile.png")
    async with client(victim) as to_victim, client(survivor) as to_survivor:
        job_ids = [
            await _submit((to_victim, to_survivor)[n % 2], image, callback_receiver.url, 0.4, n)
            for n in range(JOBS)
        ]

        async def victim_holds_a_job() -> bool:
            page = await get_json(to_survivor, "/jobs?status=Running&limit=100")
            return len(page["jobs"]) >= 2

        await _until(victim_holds_a_job)
        group = victim.pid
        victim.send(signal.SIGKILL)
        await eventually(lambda: not live_group_members(group), "the victim's processes gone", 5)
        jobs = await _final_jobs(to_survivor, job_ids, within=90)

    assert {job["status"] for job in jobs} == {"Completed"}, jobs
    assert any(job["attempts"] > 1 for job in jobs), "no job was taken over from the victim"
    await eventually(
        lambda: set(_callbacks_per_job(callback_receiver)) == set(job_ids), "all called back", 30
    )
    by_job: dict[str, set[str]] = collections.defaultdict(set)
    for callback in callback_receiver.received:
        by_job[callback.body["properties"]["job_id"]].add(callback.headers["webhook-id"])
    # A callback the victim sent just before it died may come again, with the same id.
    assert all(len(ids) == 1 for ids in by_job.values()), by_job


async def test_a_replica_paused_past_its_leases_cannot_end_the_jobs_taken_over(
    replicas: list[PrimaaServer], image_server: ImageServer, callback_receiver: CallbackReceiver
) -> None:
    """SIGSTOP stops the paused replica's main process, not its worker: the run it
    started goes on and ends while the other replica holds the job's lease and runs it
    again. Resumed, the paused replica must drop that outcome: the one that counts is
    the lease holder's (the result names the worker process that computed it)."""
    paused, other = replicas
    await other.start()
    # Stopped while the jobs are submitted, so that every job is the paused one's: as
    # many as a replica holds of CPU-bound jobs (twice its one worker).
    other.send(signal.SIGSTOP)
    image = image_server.url("/tile.png")
    async with client(paused) as to_paused, client(other) as to_other:
        job_ids = [
            await _submit(to_paused, image, callback_receiver.url, 3.0, n)
            for n in range(2 * paused.workers)
        ]
        first = job_ids[0]

        async def first_running_here() -> bool:
            job = await get_json(to_paused, f"/jobs/{first}")
            return bool(job["status"] == "Running" and job["progress_percent"] > 0)

        await _until(first_running_here)
        other.send(signal.SIGCONT)
        paused.send(signal.SIGSTOP)

        async def all_taken_over() -> bool:
            # Resumed before the other has claimed them all, the paused replica would renew
            # the lease of a job nobody took yet and run it itself, rightly.
            jobs = [await get_json(to_other, f"/jobs/{job_id}") for job_id in job_ids]
            return all(job["status"] == "Running" and job["attempts"] == 2 for job in jobs)

        await _until(all_taken_over)
        paused.send(signal.SIGCONT)
        await _final_jobs(to_other, job_ids, within=60)
        # Read once every callback is delivered: a delivery still in flight changes the job's
        # ``callback`` between the two reads compared below.
        jobs = await _delivered_jobs(to_other, job_ids, within=30)
        results = [await get_json(to_other, f"/jobs/{job_id}/result") for job_id in job_ids]
        # What the resumed replica computed meanwhile has been refused, not written later.
        await asyncio.sleep(LEASE_SECONDS * 2)
        again = [await get_json(to_paused, f"/jobs/{job_id}") for job_id in job_ids]

    assert {job["status"] for job in jobs} == {"Completed"}, jobs
    assert all(job["attempts"] == 2 for job in jobs), jobs
    workers_of_other = live_group_members(other.pid) - {other.pid}
    computed_by = {int(r["properties"]["measurements"]["pid"]) for r in results}
    assert computed_by <= workers_of_other, (computed_by, workers_of_other)
    assert again == jobs
    await eventually(
        lambda: set(_callbacks_per_job(callback_receiver)) == set(job_ids), "all called back", 30
    )
    assert max(_callbacks_per_job(callback_receiver).values()) == 1, callback_receiver.received
    # The run it resumed ended, and its outcome was dropped in one JSON line.
    log = paused.log_text()
    assert '"event":"job_outcome_dropped"' in log
    assert "Traceback" not in log


async def _until(check: object, within: float = 30.0) -> None:
    assert callable(check)
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, f"not {check.__name__} in {within} s"
        await asyncio.sleep(0.05)
