"""The service with ``executor = "dask"``: jobs through the real app run on a real cluster
(``dask scheduler`` and two ``dask worker`` processes on loopback), none in local workers."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

pytest.importorskip("distributed", reason="the Dask executor needs primaa[dask] (distributed)")

import psutil
from distributed import Client

from primaa.app import create_app
from tests.conftest import ImageServer, make_settings, wait_for_job
from tests.support.dask_cluster import DaskCluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


@pytest.fixture
async def client(
    aiohttp_client: Callable[..., Any],
    tmp_path: Path,
    cluster: DaskCluster,
    observer: Client,
    preexisting: set[int],
) -> TestClient[Any, Any]:
    settings = make_settings(
        tmp_path / "data", executor="dask", dask_scheduler=cluster.address, workers=0
    )
    app_client: TestClient[Any, Any] = await aiohttp_client(create_app(settings))
    return app_client


@pytest.fixture
def preexisting() -> set[int]:
    """Earlier tests' multiprocessing helpers (the resource tracker) may live on in this
    process; taken before the app starts, so that only the app's children count."""
    return {child.pid for child in _multiprocessing_children()}


def _multiprocessing_children() -> list[psutil.Process]:
    return [
        child
        for child in psutil.Process().children()
        if "multiprocessing" in " ".join(child.cmdline())
    ]


def local_worker_processes(preexisting: set[int]) -> list[psutil.Process]:
    """Multiprocessing children (the local pool's kind) started since ``preexisting``."""
    return [child for child in _multiprocessing_children() if child.pid not in preexisting]


async def submit(client: TestClient[Any, Any], **body: Any) -> str:
    response = await client.post("/jobs", json=body)
    assert response.status == 202, await response.text()
    job_id: str = (await response.json())["job_id"]
    return job_id


async def test_a_job_completes_on_the_cluster_with_its_progress_seen_rising(
    client: TestClient[Any, Any],
    observer: Client,
    image_server: ImageServer,
    preexisting: set[int],
) -> None:
    assert local_worker_processes(preexisting) == []
    job_id = await submit(
        client,
        image_url=image_server.url("/tile.png"),
        algorithm_name="test_sleep",
        parameters={"seconds": 3.0, "steps": 30},
    )
    seen: set[float] = set()
    while True:
        job = await (await client.get(f"/jobs/{job_id}")).json()
        if job["status"] in {"Completed", "Failed", "Cancelled"}:
            break
        seen.add(job["progress"])
        await asyncio.sleep(0.1)
    assert job["status"] == "Completed", job
    assert any(0 < percent < 100 for percent in seen), seen
    feature = await (await client.get(f"/jobs/{job_id}/result")).json()
    pid = int(feature["properties"]["measurements"]["pid"])
    assert pid in set((await observer.run(os.getpid)).values()), "it ran in a Dask worker"
    assert local_worker_processes(preexisting) == []


async def test_a_builtin_algorithm_runs_on_the_cluster(
    client: TestClient[Any, Any], image_server: ImageServer
) -> None:
    job_id = await submit(
        client, image_url=image_server.url("/tile.png"), algorithm_name="poi_detection"
    )
    done = await wait_for_job(client, job_id, within=60)
    assert done["status"] == "Completed", done
    feature = await (await client.get(f"/jobs/{job_id}/result")).json()
    assert feature["properties"]["measurements"]["count"] > 0


async def test_an_algorithm_that_kills_every_worker_fails_its_job_clearly(
    client: TestClient[Any, Any], image_server: ImageServer
) -> None:
    job_id = await submit(
        client, image_url=image_server.url("/tile.png"), algorithm_name="test_crash"
    )
    done = await wait_for_job(client, job_id, within=90)
    assert done["status"] == "Failed"
    assert "every Dask worker that ran this task died" in done["error"]
    assert done["attempts"] == 1, "not retried: it would only kill more workers"


async def test_a_job_past_its_time_limit_fails_and_its_cluster_task_stops(
    client: TestClient[Any, Any], observer: Client, image_server: ImageServer
) -> None:
    job_id = await submit(
        client,
        image_url=image_server.url("/tile.png"),
        algorithm_name="test_sleep",
        parameters={"seconds": 120, "steps": 1200},
        timeout=2,
    )
    done = await wait_for_job(client, job_id, within=60)
    assert done["status"] == "Failed"
    assert done["error"] == "timed out after 2 s"
    # Its task stopped on its worker (it had two minutes to go).
    async with asyncio.timeout(30):
        while True:
            executing = await observer.run(executing_tasks)
            if not any(executing.values()):
                break
            await asyncio.sleep(0.1)


def executing_tasks(dask_worker: Any) -> int:
    """Run on each worker: the tasks its threads are running (cancelled ones included)."""
    return len(dask_worker.state.executing)
