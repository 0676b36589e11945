"""Claims of some algorithms only (a dispatcher's CPU-bound jobs, and all the others),
on every store: oldest first within what the filter admits, never a job twice."""

from __future__ import annotations

import asyncio

from primaa.jobs.model import Job, JobStatus
from primaa.jobs.storage import AlgorithmFilter, JobStore
from tests.store.test_store_contract import T0, Backend, make_job

CPU = AlgorithmFilter(frozenset({"nuclei", "tissue"}))
OTHERS = AlgorithmFilter(frozenset({"nuclei", "tissue"}), excluding=True)


async def create_mixed(store: JobStore, algorithms: list[str]) -> list[Job]:
    """One job per entry, the oldest first, named by its age: ``job-0000`` is the oldest."""
    jobs = [make_job(n, algorithm=algorithm) for n, algorithm in enumerate(algorithms)]
    for job in reversed(jobs):  # stored newest first: the order is the jobs' ages, not rows'
        await store.create(job)
    return jobs


async def claim(store: JobStore, algorithms: AlgorithmFilter, limit: int) -> list[str]:
    claimed = await store.claim(
        lease_owner="w", lease_seconds=30, limit=limit, now=T0 + 100, algorithms=algorithms
    )
    assert all(job.status is JobStatus.RUNNING and job.attempts == 1 for job in claimed)
    return [job.job_id for job in claimed]


async def test_a_filter_naming_algorithms_takes_their_oldest_jobs_across_them(
    store: JobStore,
) -> None:
    await create_mixed(
        store, ["async_io", "tissue", "nuclei", "async_io", "nuclei", "tissue", "nuclei"]
    )
    assert await claim(store, CPU, 3) == ["job-0001", "job-0002", "job-0004"]
    assert await claim(store, CPU, 10) == ["job-0005", "job-0006"]
    assert await claim(store, CPU, 10) == []
    pending = await store.list(status=JobStatus.PENDING)
    assert sorted(job.algorithm for job in pending.jobs) == ["async_io", "async_io"]


async def test_an_excluding_filter_takes_every_other_algorithm_known_or_not(
    store: JobStore,
) -> None:
    await create_mixed(store, ["nuclei", "async_io", "tissue", "retired", "nuclei", "async_io"])
    assert await claim(store, OTHERS, 2) == ["job-0001", "job-0003"]
    assert await claim(store, OTHERS, 10) == ["job-0005"]
    assert await claim(store, OTHERS, 10) == []
    assert await claim(store, CPU, 10) == ["job-0000", "job-0002", "job-0004"]


async def test_a_filter_leaves_running_and_cancelled_jobs(store: JobStore) -> None:
    jobs = await create_mixed(store, ["nuclei", "nuclei", "nuclei"])
    await store.request_cancel(jobs[0].job_id)
    assert await claim(store, CPU, 1) == ["job-0001"]
    assert await claim(store, CPU, 5) == ["job-0002"]
    assert await claim(store, AlgorithmFilter(frozenset({"nuclei"})), 5) == []


async def test_concurrent_filtered_claims_never_share_a_job(backend: Backend) -> None:
    stores = [await backend.open() for _ in range(3)]
    await create_mixed(stores[0], ["nuclei", "tissue", "async_io", "tissue"] * 10)
    batches = await asyncio.gather(
        *(
            store.claim(
                lease_owner=f"w{i}-{k}",
                lease_seconds=30,
                limit=3,
                now=T0 + 100,
                algorithms=(CPU, OTHERS)[k % 2],
            )
            for k in range(6)
            for i, store in enumerate(stores)
        )
    )
    claimed = [job.job_id for batch in batches for job in batch]
    assert len(claimed) == len(set(claimed))
    for batch, k in zip(batches, [k for k in range(6) for _ in stores], strict=True):
        assert all(CPU.admits(job.algorithm) == (k % 2 == 0) for job in batch)
