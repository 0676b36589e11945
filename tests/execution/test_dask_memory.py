"""A Dask worker's memory limit (``dask worker --memory-limit``), as docs/deploy.md says:
its nanny restarts a worker past 95 % of it, the task runs again, and a task that takes
every worker it lands on past the limit fails its job as ``WorkerCrashed``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("distributed", reason="the Dask executor needs primaa[dask] (distributed)")

from primaa.execution.dask.executor import DaskExecutor
from primaa.jobs.ports import Task, WorkerCrashed
from tests.conftest import TEST_PLUGINS
from tests.execution.conftest import WITHIN
from tests.support.dask_cluster import DaskCluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

#: An idle worker with primaa's plugins loaded is 200-300 MB resident.
MEMORY_LIMIT_MB = 800


@pytest.fixture
def limited_cluster(tmp_path: Path) -> Iterator[DaskCluster]:
    cluster = DaskCluster(tmp_path / "dask", allowed_failures=1)
    cluster.directory.mkdir()
    try:
        cluster.start_scheduler()
        cluster.add_worker("limited", f"--memory-limit={MEMORY_LIMIT_MB}MiB")
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
async def executor(limited_cluster: DaskCluster) -> AsyncIterator[DaskExecutor]:
    dask = DaskExecutor(
        scheduler=limited_cluster.address,
        max_pixels=10_000_000,
        plugin_modules=TEST_PLUGINS,
        log_format="json",
    )
    await dask.start()
    try:
        yield dask
    finally:
        await dask.close()


async def test_a_task_past_the_workers_memory_limit_fails_as_worker_crashed(
    executor: DaskExecutor, tmp_path: Path
) -> None:
    image = tmp_path / "image.png"
    Image.fromarray(np.full((8, 8, 3), 200, dtype=np.uint8)).save(image)
    small = await executor.run(
        Task("job-small", "test_hog", image, {"megabytes": 64, "touch": True})
    )
    assert small.measurements["allocated"] == 64 * 2**20, "below the limit, it completes"
    hog = Task("job-hog", "test_hog", image, {"megabytes": 2 * MEMORY_LIMIT_MB, "touch": True})
    with pytest.raises(WorkerCrashed, match="the worker's memory limit"):
        await asyncio.wait_for(executor.run(hog), WITHIN * 2)
