"""On a store shared by replicas, expired leases are swept every housekeeping interval:
a dead replica's job is back within about a second of its lease's end, not up to a
third of a lease later (which made the dead replica's jobs finish 14 s after a kill
at the default 10 s lease, against a 15 s target)."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from primaa.app import create_app
from primaa.jobs.model import Job
from primaa.store.sql import SqlStore
from tests.conftest import ImageServer, make_settings, wait_for_job
from tests.support.postgres import scratch_database

POSTGRES_URL = os.environ.get("PRIMAA_TEST_POSTGRES_URL", "")
pytestmark = pytest.mark.skipif(
    not POSTGRES_URL, reason="a store shared by replicas: set PRIMAA_TEST_POSTGRES_URL"
)


@pytest.fixture
async def database_url() -> AsyncIterator[str]:
    pytest.importorskip("asyncpg")
    async with scratch_database(POSTGRES_URL) as url:
        yield url


async def test_a_dead_replicas_job_runs_again_soon_after_its_lease_ends(
    database_url: str,
    aiohttp_client: Callable[..., Any],
    tmp_path: Path,
    image_server: ImageServer,
) -> None:
    dead = SqlStore(database_url)
    await dead.open()
    job = Job(
        job_id="orphan-1",
        algorithm="test_sleep",
        parameters={"seconds": 0.01, "steps": 1},
        image_url=image_server.url("/tile.png"),
    )
    await dead.create(job)
    await dead.claim(lease_owner="dead-replica", lease_seconds=2, limit=1, now=time.time())
    await dead.close()

    # This replica renews its own leases every 10 s; the dead one's ends in 2 s.
    settings = make_settings(tmp_path / "d", database_url=database_url, lease_seconds=30)
    started = time.monotonic()
    client = await aiohttp_client(create_app(settings))
    done = await wait_for_job(client, job.job_id, within=15)
    assert done["status"] == "Completed"
    assert done["attempts"] == 2
    assert time.monotonic() - started < 8, "swept at the first renewal, 10 s in"
