"""The scheduler goes away and comes back: submissions still succeed, ``/health`` says the
executor is down, and the jobs run once a scheduler answers at the same address again."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

pytest.importorskip("distributed", reason="the Dask executor needs primaa[dask] (distributed)")

from primaa.app import create_app
from tests.conftest import ImageServer, make_settings, wait_for_job
from tests.execution.conftest import WITHIN
from tests.support.dask_cluster import DaskCluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[tuple[DaskCluster, int]]:
    """A cluster of its own (this test kills its scheduler): one worker, a fixed port."""
    port = free_port()
    cluster = DaskCluster(tmp_path / "dask")
    cluster.directory.mkdir()
    try:
        cluster.start(workers=1, port=port)
        yield cluster, port
    finally:
        cluster.stop()


async def health(client: TestClient[Any, Any]) -> dict[str, Any]:
    body: dict[str, Any] = await (await client.get("/health")).json()
    return body


async def test_jobs_wait_for_a_lost_scheduler_and_run_when_it_is_back(
    aiohttp_client: Callable[..., Any],
    tmp_path: Path,
    own_cluster: tuple[DaskCluster, int],
    image_server: ImageServer,
) -> None:
    cluster, port = own_cluster
    settings = make_settings(tmp_path / "data", executor="dask", dask_scheduler=cluster.address)
    client: TestClient[Any, Any] = await aiohttp_client(create_app(settings))
    assert (await health(client))["executor"] == "ok"

    scheduler = next(p for p in cluster._processes if "distributed.cli.dask_scheduler" in p.args)
    scheduler.kill()
    scheduler.wait()
    async with asyncio.timeout(WITHIN):
        while True:
            body = await health(client)
            if body["executor"] != "ok":
                break
            await asyncio.sleep(0.1)
    assert body["status"] == "degraded"
    assert body["executor"].startswith("down: the Dask scheduler at tcp://127.0.0.1:")

    body = {
        "image_url": image_server.url("/tile.png"),
        "algorithm_name": "test_sleep",
        "parameters": {"seconds": 0.2, "steps": 2},
    }
    submitted = [await (await client.post("/jobs", json=body)).json() for _ in range(2)]
    doomed, job_id = (job["job_id"] for job in submitted)  # the first holds the one CPU slot
    await wait_for_job(client, doomed, {"Running"}, within=WITHIN)
    # A cancel takes effect while the job waits for the scheduler.
    assert (await client.post(f"/jobs/{doomed}/cancel")).status == 202
    assert (await wait_for_job(client, doomed, within=WITHIN))["status"] == "Cancelled"
    assert (await (await client.get(f"/jobs/{job_id}")).json())["status"] in {"Pending", "Running"}

    cluster.start_scheduler(port)  # a dask worker leaves with its scheduler: start another
    cluster.add_worker("worker-again")
    done = await wait_for_job(client, job_id, within=WITHIN)
    assert done["status"] == "Completed", done
    assert (await health(client))["executor"] == "ok"
