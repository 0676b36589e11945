"""Final writes are fenced by the lease: a process that lost a job's lease cannot end it.

Part of the store contract, run on the memory store, SQLite and PostgreSQL.
"""

from __future__ import annotations

import math

import pytest

from primaa.jobs.model import JobStatus
from primaa.jobs.storage import JobStore, StaleJob
from tests.store.test_store_contract import T0, create_jobs, feature, make_delivery


async def test_a_lost_lease_cannot_end_the_job(store: JobStore) -> None:
    await create_jobs(store, 1)
    (first,) = await store.claim(lease_owner="paused", lease_seconds=30, limit=1, now=T0)
    await store.requeue_expired(now=T0 + 31, max_attempts=3)
    (second,) = await store.claim(lease_owner="live", lease_seconds=30, limit=1, now=T0 + 32)

    late = first.moved_to(JobStatus.COMPLETED, T0 + 40)
    with pytest.raises(StaleJob):
        await store.finish(
            late,
            expected=JobStatus.RUNNING,
            result=feature(late.job_id),
            delivery=make_delivery(late),
            lease_owner="paused",
        )
    with pytest.raises(StaleJob):
        await store.finish(
            first.moved_to(JobStatus.PENDING, T0 + 40),
            expected=JobStatus.RUNNING,
            lease_owner="paused",
        )
    assert await store.get(first.job_id) == second
    assert await store.get_result(first.job_id) is None
    assert await store.deliveries_for(first.job_id) == []

    done = second.moved_to(JobStatus.COMPLETED, T0 + 50)
    await store.finish(
        done, expected=JobStatus.RUNNING, result=feature(done.job_id), lease_owner="live"
    )
    assert await store.get(done.job_id) == done


async def test_a_lease_back_to_pending_is_lost_too(store: JobStore) -> None:
    await create_jobs(store, 1)
    (job,) = await store.claim(lease_owner="paused", lease_seconds=30, limit=1, now=T0)
    await store.requeue_expired(now=math.inf, max_attempts=3)
    with pytest.raises(StaleJob):
        await store.finish(
            job.moved_to(JobStatus.FAILED, T0 + 40, error="late"),
            expected=JobStatus.RUNNING,
            lease_owner="paused",
        )
    stored = await store.get(job.job_id)
    assert stored is not None
    assert stored.status is JobStatus.PENDING
