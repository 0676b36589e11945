"""The store contract, continued: a large result's reference kept like any result, and a
finished job deleted with everything that hangs off it (every backend alike)."""

from __future__ import annotations

import pytest

from primaa.jobs.model import DeliveryAttempt, DeliveryStatus, JobStatus
from primaa.jobs.storage import Deleted, JobStore, StaleJob
from primaa.results.feature import summary_feature
from primaa.results.files import file_reference, referenced_file
from tests.store.test_store_contract import (
    T0,
    create_jobs,
    feature,
    make_delivery,
    run_one,
)


async def test_a_large_results_reference_is_kept_as_it_is(store: JobStore) -> None:
    await create_jobs(store, 1)
    running = await run_one(store)
    done = running.moved_to(JobStatus.COMPLETED, T0 + 110)
    name = f"{done.job_id}.0123abcd.geojson.gz"
    reference = file_reference(summary_feature(feature(done.job_id)), name, 123_456_789)
    await store.finish(done, expected=JobStatus.RUNNING, result=reference)
    stored = await store.get_result(done.job_id)
    assert stored == reference
    assert stored is not None
    assert referenced_file(stored) == name
    assert stored["geometry"] is None


async def test_delete_removes_a_finished_job_its_result_and_deliveries(store: JobStore) -> None:
    kept, gone = await create_jobs(store, 2)
    for _ in range(2):
        running = await run_one(store)
        done = running.moved_to(JobStatus.COMPLETED, T0 + 110)
        await store.finish(
            done,
            expected=JobStatus.RUNNING,
            result=feature(done.job_id),
            delivery=make_delivery(done),
        )
    delivery_id = make_delivery(gone).delivery_id
    attempt = DeliveryAttempt(at=T0 + 201, status_code=500, error=None, duration=0.1)
    await store.record_attempt(
        delivery_id, attempt, status=DeliveryStatus.PENDING, next_attempt_at=T0 + 300
    )

    assert await store.delete(gone.job_id) == Deleted(result=feature(gone.job_id))
    assert await store.get(gone.job_id) is None
    assert await store.state(gone.job_id) is None
    assert await store.get_result(gone.job_id) is None
    assert await store.deliveries_for(gone.job_id) == []
    due = await store.due_deliveries(now=T0 + 1000, limit=10)
    assert [d.job_id for d in due] == [kept.job_id]
    assert [j.job_id for j in (await store.list()).jobs] == [kept.job_id]
    assert await store.get_result(kept.job_id) == feature(kept.job_id)
    assert await store.delete(gone.job_id) is None


async def test_delete_of_a_failed_job_has_no_result(store: JobStore) -> None:
    (job,) = await create_jobs(store, 1)
    failed = job.moved_to(JobStatus.FAILED, T0 + 10, error="no")
    await store.finish(failed, expected=JobStatus.PENDING)
    assert await store.delete(job.job_id) == Deleted(result=None)
    assert await store.get(job.job_id) is None


async def test_an_unfinished_job_is_not_deleted(store: JobStore) -> None:
    jobs = await create_jobs(store, 2)
    claimed = await run_one(store)
    for job in jobs:
        with pytest.raises(StaleJob):
            await store.delete(job.job_id)
        assert await store.get(job.job_id) is not None
    assert (await store.get(claimed.job_id)) == claimed
    assert await store.delete("unknown") is None
