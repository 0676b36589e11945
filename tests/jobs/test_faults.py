"""Faults provoked for real: workers that die, jobs that never stop, jobs that eat memory.

Every test runs real worker processes; the crashes are real signals and exits.
"""

from __future__ import annotations

import asyncio
import datetime
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from primaa.app import create_app
from tests.conftest import ImageServer, make_settings, wait_for_job

Client = TestClient[Any, Any]
AiohttpClient = Callable[..., Any]


async def submit(client: Client, image: ImageServer, algorithm: str, **extra: Any) -> str:
    response = await client.post(
        "/jobs",
        json={"image_url": image.url("/tile.png"), "algorithm_name": algorithm, **extra},
    )
    assert response.status == 202, await response.text()
    job_id: str = (await response.json())["job_id"]
    return job_id


async def wait_for_progress(client: Client, job_id: str, within: float = 20.0) -> None:
    """Until the job has reported progress, i.e. it is inside its worker."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        job = await (await client.get(f"/jobs/{job_id}")).json()
        if job["progress"] > 0:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"job {job_id} reported no progress within {within} s")


async def run_quick_job(client: Client, image: ImageServer, within: float = 20.0) -> float:
    """Run a short job to completion; return how long it took from submission."""
    started = time.monotonic()
    job_id = await submit(client, image, "test_sleep", parameters={"seconds": 0.01, "steps": 1})
    done = await wait_for_job(client, job_id, within=within)
    assert done["status"] == "Completed", done
    return time.monotonic() - started


def timestamp(iso: str) -> float:
    return datetime.datetime.fromisoformat(iso).timestamp()


@pytest.mark.parametrize(
    ("algorithm", "cause"),
    [
        ("test_segfault", "killed by SIGSEGV"),
        ("test_sigkill", "killed by SIGKILL, e.g. by the out-of-memory killer"),
        ("test_crash", "exit code 3"),
    ],
)
async def test_a_crashing_worker_fails_only_its_job_and_the_job_beside_it_runs_again(
    aiohttp_client: AiohttpClient,
    tmp_path: Path,
    image_server: ImageServer,
    algorithm: str,
    cause: str,
) -> None:
    client = await aiohttp_client(create_app(make_settings(tmp_path / "d", workers=2)))
    sleeper = await submit(
        client, image_server, "test_sleep", parameters={"seconds": 3, "steps": 30}
    )
    await wait_for_progress(client, sleeper)
    crashed_at = time.time()
    crasher = await submit(client, image_server, algorithm)

    failed = await wait_for_job(client, crasher, within=20)
    assert failed["status"] == "Failed"
    assert failed["error"] == f"the worker process died ({cause}) while running this job"
    assert failed["attempts"] == 1, "a job that kills its worker is not retried"

    done = await wait_for_job(client, sleeper, within=30)
    assert done["status"] == "Completed"
    assert done["error"] is None
    assert done["attempts"] == 1, "the run a neighbour interrupted does not count"
    assert timestamp(done["started_at"]) > crashed_at, "the sleeper was interrupted and re-run"
    await run_quick_job(client, image_server)


async def test_a_worker_dead_for_no_known_reason_retries_its_job_as_a_counted_attempt(
    aiohttp_client: AiohttpClient, tmp_path: Path, image_server: ImageServer
) -> None:
    client = await aiohttp_client(create_app(make_settings(tmp_path / "d", workers=1)))
    job_id = await submit(
        client, image_server, "test_sleep", parameters={"seconds": 2, "steps": 20}
    )
    await wait_for_progress(client, job_id)
    (worker,) = multiprocessing.active_children()
    assert worker.pid is not None
    os.kill(worker.pid, signal.SIGTERM)  # looks like the executor's own SIGTERM: nobody to blame

    done = await wait_for_job(client, job_id, within=30)
    assert done["status"] == "Completed"
    assert done["attempts"] == 2, "without a culprit, the old counted retry applies"


async def test_a_job_past_its_time_limit_that_never_reports_progress_is_killed(
    client: Client, image_server: ImageServer
) -> None:
    await run_quick_job(client, image_server)  # the worker is up: the spinner starts at once
    submitted = time.monotonic()
    spinner = await submit(client, image_server, "test_spin", parameters={"seconds": 60}, timeout=1)
    done = await wait_for_job(client, spinner, within=10)
    assert done["status"] == "Failed"
    assert done["error"] == "timed out after 1 s", "a deliberate kill is not a dead worker"
    assert done["attempts"] == 1
    assert time.monotonic() - submitted < 3.0

    follower = await run_quick_job(client, image_server, within=15)
    assert follower < 6.0, f"the follower waited {follower:.1f} s for the worker"
    assert (await (await client.get(f"/jobs/{spinner}")).json())["error"] == done["error"]


async def test_cancelling_a_job_that_never_reports_progress_frees_its_worker_quickly(
    client: Client, image_server: ImageServer
) -> None:
    await run_quick_job(client, image_server)
    spinner = await submit(client, image_server, "test_spin", parameters={"seconds": 60})
    await wait_for_progress(client, spinner)

    cancelled_at = time.monotonic()
    response = await client.post(f"/jobs/{spinner}/cancel")
    assert response.status == 202
    done = await wait_for_job(client, spinner, within=10)
    assert done["status"] == "Cancelled"
    assert done["error"] == "cancelled"
    assert time.monotonic() - cancelled_at < 2.0

    follower = await run_quick_job(client, image_server, within=15)
    assert follower < 6.0, f"the follower waited {follower:.1f} s for the worker"


async def test_a_job_beyond_the_worker_memory_limit_fails_and_the_worker_goes_on(
    aiohttp_client: AiohttpClient, tmp_path: Path, image_server: ImageServer
) -> None:
    settings = make_settings(tmp_path / "d", worker_memory_limit_mb=1024)
    client = await aiohttp_client(create_app(settings))
    hog = await submit(client, image_server, "test_hog", parameters={"megabytes": 2048})
    done = await wait_for_job(client, hog, within=30)
    assert done["status"] == "Failed"
    assert done["error"] == "the algorithm ran out of memory (worker limit 1024 MB)"
    assert done["attempts"] == 1
    await run_quick_job(client, image_server)
