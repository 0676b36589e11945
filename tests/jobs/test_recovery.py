"""Start-up recovery: jobs a dead process left Running are retried or failed, never lost."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from primaa.app import create_app
from primaa.jobs.model import Delivery, Job
from primaa.store.sql import SqlStore
from tests.conftest import CallbackReceiver, ImageServer, make_settings


class _CrashOnAddDelivery(SqlStore):
    """A store whose process dies (here: raises) on a write made apart from a transition."""

    async def add_delivery(self, delivery: Delivery) -> None:
        raise RuntimeError("power cut between the job's final state and its callback")


async def test_a_job_failed_at_start_up_has_its_callback_written_with_it(
    aiohttp_client: Callable[..., Any],
    tmp_path: Path,
    image_server: ImageServer,
    callback_receiver: CallbackReceiver,
) -> None:
    """A job out of attempts is failed by the lease sweep; its callback is in the same write.

    If the callback were queued by a second write, a crash between the two would leave
    a Failed job that nobody is ever told about.
    """
    settings = make_settings(tmp_path / "data", max_attempts=1)
    left_over = SqlStore(settings.resolved_database_url)
    await left_over.open()
    job = Job(
        job_id="job-left-running",
        algorithm="test_sleep",
        parameters={"seconds": 0.1, "steps": 1},
        image_url=image_server.url("/tile.png"),
        callback_url=callback_receiver.url,
        callback_token="k",
    )
    await left_over.create(job)
    (running,) = await left_over.claim(
        lease_owner="dead", lease_seconds=600, limit=1, now=job.created_at
    )
    assert running.attempts == 1
    await left_over.close()

    store = _CrashOnAddDelivery(settings.resolved_database_url)
    client = await aiohttp_client(create_app(settings, store=store))
    callback = await callback_receiver.next(within=15)
    assert callback.headers["Authorization"] == "Bearer k"
    assert callback.body["geometry"] is None
    assert callback.body["properties"]["job_id"] == job.job_id
    assert callback.body["properties"]["status"] == "Failed"
    body = await (await client.get(f"/jobs/{job.job_id}")).json()
    assert body["status"] == "Failed"
    assert body["attempts"] == 1
