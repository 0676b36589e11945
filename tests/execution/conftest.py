"""A real Dask cluster shared by the Dask tests of this package (started once, on first use)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import pytest

from tests.support.dask_cluster import DaskCluster

if TYPE_CHECKING:
    from distributed import Client

#: Generous bounds for waits that must end: a failure shows as a timeout, not a hang.
WITHIN = 60.0


@pytest.fixture(scope="package")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskCluster]:
    """A scheduler and two workers; a task that killed two workers fails (allowed-failures 1)."""
    pytest.importorskip("distributed", reason="the Dask executor needs primaa[dask] (distributed)")
    cluster = DaskCluster(tmp_path_factory.mktemp("dask"), allowed_failures=1)
    try:
        cluster.start(workers=2)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
async def observer(cluster: DaskCluster) -> AsyncIterator[Client]:
    """The test's own client, to watch the cluster; both workers are up before a test starts."""
    from distributed import Client

    client = await Client(cluster.address, asynchronous=True, set_as_default=False)
    try:
        await client.wait_for_workers(2, timeout=WITHIN)
        yield client
    finally:
        await client.close()
