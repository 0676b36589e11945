"""One contract for every JobStore: the memory fake, SQLite and PostgreSQL.

Whatever the job manager may rely on is tested here once and run against each
backend, so the fake cannot drift from the real stores.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import math
import os
import pathlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from primaa.jobs.model import (
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
    InvalidTransition,
    Job,
    JobState,
    JobStatus,
)
from primaa.jobs.storage import JobStore, StaleJob
from primaa.store.memory import MemoryStore

POSTGRES_ENV = "PRIMAA_TEST_POSTGRES_URL"
NO_POSTGRES = f"{POSTGRES_ENV} not set: no PostgreSQL server to test against"

T0 = 1_700_000_000.0

OpenStore = Callable[[], Awaitable[JobStore]]


class Backend:
    """Opens stores on one backend; every store it opens sees the same data."""

    def __init__(self, name: str, url: str | None, schema: str | None = None) -> None:
        self.name = name
        self.url = url
        self.schema = schema
        self._memory = MemoryStore() if url is None else None
        self.opened: list[JobStore] = []

    async def open(self) -> JobStore:
        if self._memory is not None:
            return self._memory
        from primaa.store.factory import open_store_from_url
        from primaa.store.sql import SqlStore

        assert self.url is not None
        store: JobStore
        if self.schema is None:
            store = open_store_from_url(self.url)
        else:
            options = {"connect_args": {"server_settings": {"search_path": self.schema}}}
            store = SqlStore(self.url, engine_options=options)
        await store.open()
        self.opened.append(store)
        return store

    async def close_all(self) -> None:
        for store in self.opened:
            await store.close()
        self.opened.clear()


async def _postgres_schema(base_url: str) -> tuple[str, Callable[[], Awaitable[None]]]:
    """A fresh schema per test: isolation (alembic_version included) without the
    cost of a new database."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    from primaa.store.sql_engine import store_url

    schema = f"primaa_test_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(store_url(base_url), poolclass=NullPool)
    async with admin.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))

    async def drop() -> None:
        async with admin.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        await admin.dispose()

    return schema, drop


@contextlib.asynccontextmanager
async def open_backend(name: str, tmp_path: pathlib.Path) -> AsyncIterator[Backend]:
    drop: Callable[[], Awaitable[None]] | None = None
    if name == "memory":
        chosen = Backend(name, None)
    elif name == "sqlite":
        # A directory that does not exist yet: the store creates it.
        chosen = Backend(name, f"sqlite:///{tmp_path / 'data' / 'primaa.sqlite3'}")
    else:
        base_url = os.environ.get(POSTGRES_ENV)
        if not base_url:
            pytest.skip(NO_POSTGRES)
        schema, drop = await _postgres_schema(base_url)
        chosen = Backend(name, base_url, schema)
    try:
        yield chosen
    finally:
        await chosen.close_all()
        if drop is not None:
            await drop()


POSTGRES = pytest.param("postgres", marks=pytest.mark.postgres)


@pytest.fixture(params=["memory", "sqlite", POSTGRES])
async def backend(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> AsyncIterator[Backend]:
    async with open_backend(request.param, tmp_path) as chosen:
        yield chosen


@pytest.fixture(params=["sqlite", POSTGRES])
async def sql_backend(
    request: pytest.FixtureRequest, tmp_path: pathlib.Path
) -> AsyncIterator[Backend]:
    """The SQL stores only: for what a store in memory cannot have (files, schemas)."""
    async with open_backend(request.param, tmp_path) as chosen:
        yield chosen


@pytest.fixture
async def store(backend: Backend) -> JobStore:
    return await backend.open()


def make_job(n: int = 0, **changes: Any) -> Job:
    fields: dict[str, Any] = {
        "job_id": f"job-{n:04d}",
        "algorithm": "nuclei",
        "parameters": {"threshold": 0.5, "channels": [1, 2], "nested": {"a": None}},
        "image_url": f"https://example.org/{n}.tif",
        "created_at": T0 + n,
        "updated_at": T0 + n,
    }
    fields.update(changes)
    return Job(**fields)


async def create_jobs(store: JobStore, count: int, **changes: Any) -> list[Job]:
    jobs = [make_job(n, **changes) for n in range(count)]
    for job in jobs:
        await store.create(job)
    return jobs


async def run_one(store: JobStore, *, lease_owner: str = "w1", now: float = T0 + 100) -> Job:
    (job,) = await store.claim(lease_owner=lease_owner, lease_seconds=30, limit=1, now=now)
    return job


def feature(job_id: str) -> dict[str, Any]:
    return {
        "type": "Feature",
        "geometry": {"type": "MultiPoint", "coordinates": [[1.5, 2.0], [3, 4]]},
        "properties": {"job_id": job_id, "count": 2, "ok": True, "error": None},
    }


# --- create / get -------------------------------------------------------------------------


async def test_create_then_get_returns_equal_job(store: JobStore) -> None:
    job = make_job(
        7,
        image_path="spool/7.tif",
        callback_url="https://lims.example/cb",
        callback_token="s3cret",
        client_id="key-hash",
        timeout=12.5,
        created_at=T0 + 0.123456789,
    )
    await store.create(job)
    assert await store.get(job.job_id) == job


async def test_get_unknown_is_none(store: JobStore) -> None:
    assert await store.get("no-such-job") is None
    assert await store.state("no-such-job") is None


async def test_state_follows_the_job(store: JobStore) -> None:
    job = make_job(3, client_id="key-hash")
    await store.create(job)
    assert await store.state(job.job_id) == JobState(JobStatus.PENDING, None, "key-hash")
    [claimed] = await store.claim(lease_owner="me", lease_seconds=30, limit=1, now=T0)
    failed = claimed.moved_to(JobStatus.FAILED, now=T0 + 1, error="it broke")
    await store.finish(failed, expected=JobStatus.RUNNING)
    state = await store.state(job.job_id)
    assert state == JobState(JobStatus.FAILED, "it broke", "key-hash")
    assert state.status is JobStatus.FAILED


async def test_create_twice_is_refused(store: JobStore) -> None:
    await store.create(make_job(1))
    with pytest.raises(ValueError, match="already exists"):
        await store.create(make_job(1))


async def test_stored_parameters_are_a_copy(store: JobStore) -> None:
    parameters: dict[str, Any] = {"threshold": 1}
    job = make_job(1, parameters=parameters)
    await store.create(job)
    parameters["threshold"] = 2
    stored = await store.get(job.job_id)
    assert stored is not None
    assert stored.parameters == {"threshold": 1}


# --- list ---------------------------------------------------------------------------------


async def test_list_is_newest_first(store: JobStore) -> None:
    jobs = await create_jobs(store, 5)
    page = await store.list()
    assert [j.job_id for j in page.jobs] == [j.job_id for j in reversed(jobs)]
    assert page.next_cursor is None


async def test_list_filters(store: JobStore) -> None:
    await store.create(make_job(1, algorithm="a", client_id="alice"))
    await store.create(make_job(2, algorithm="b", client_id="alice"))
    await store.create(make_job(3, algorithm="a", client_id="bob"))
    await store.create(make_job(4, algorithm="a", client_id=None))
    running = await run_one(store)
    assert running.job_id == "job-0001"

    def ids(page: Any) -> list[str]:
        return [j.job_id for j in page.jobs]

    assert ids(await store.list(algorithm="a")) == ["job-0004", "job-0003", "job-0001"]
    assert ids(await store.list(client_id="alice")) == ["job-0002", "job-0001"]
    assert ids(await store.list(status=JobStatus.RUNNING)) == ["job-0001"]
    assert ids(await store.list(status=JobStatus.PENDING, algorithm="a")) == [
        "job-0004",
        "job-0003",
    ]
    assert ids(await store.list(status=JobStatus.PENDING, algorithm="a", client_id="bob")) == [
        "job-0003"
    ]
    assert ids(await store.list(algorithm="zzz")) == []


@pytest.mark.parametrize("limit", [1, 4, 7, 30])
async def test_list_pages_cover_every_job_once(store: JobStore, limit: int) -> None:
    # Ties on created_at are the hard case: the job_id breaks them.
    jobs = [make_job(n, created_at=T0 + n // 3) for n in range(22)]
    for job in jobs:
        await store.create(job)
    expected = sorted(jobs, key=lambda j: (j.created_at, j.job_id), reverse=True)
    seen: list[Job] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = await store.list(limit=limit, cursor=cursor)
        assert len(page.jobs) <= limit
        seen.extend(page.jobs)
        pages += 1
        cursor = page.next_cursor
        if cursor is None:
            break
        assert pages < 100
    assert [j.job_id for j in seen] == [j.job_id for j in expected]
    assert pages == max(1, -(-len(jobs) // limit))


async def test_list_paging_with_a_filter(store: JobStore) -> None:
    for n in range(12):
        await store.create(make_job(n, algorithm="even" if n % 2 == 0 else "odd"))
    first = await store.list(algorithm="even", limit=4)
    assert first.next_cursor is not None
    second = await store.list(algorithm="even", limit=4, cursor=first.next_cursor)
    assert [j.job_id for j in [*first.jobs, *second.jobs]] == [
        f"job-{n:04d}" for n in (10, 8, 6, 4, 2, 0)
    ]
    assert second.next_cursor is None


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode()


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "not a cursor!",
        "%%%%",
        _b64(b"\xff\xfe"),
        _b64(b"{}"),
        _b64(b'["x", "job-1"]'),
        _b64(b"[1.0]"),
        _b64(b'[1.0, "a", 3]'),
        _b64(b"[1.0, 2]"),
        _b64(b'[true, "job-1"]'),
        _b64(b'[NaN, "job-1"]'),
    ],
)
async def test_list_rejects_a_malformed_cursor(store: JobStore, cursor: str) -> None:
    await create_jobs(store, 2)
    with pytest.raises(ValueError, match="cursor"):
        await store.list(cursor=cursor)


@pytest.mark.parametrize("limit", [0, -1])
async def test_list_rejects_a_bad_limit(store: JobStore, limit: int) -> None:
    with pytest.raises(ValueError, match="limit"):
        await store.list(limit=limit)


# --- claim / renew / requeue --------------------------------------------------------------


async def test_claim_takes_the_oldest_pending_up_to_the_limit(store: JobStore) -> None:
    jobs = await create_jobs(store, 5)
    await store.request_cancel(jobs[0].job_id)
    now = T0 + 50
    claimed = await store.claim(lease_owner="w1", lease_seconds=30, limit=2, now=now)
    assert [j.job_id for j in claimed] == ["job-0001", "job-0002"]
    for job in claimed:
        assert job.status is JobStatus.RUNNING
        assert job.lease_owner == "w1"
        assert job.lease_expires_at == now + 30
        assert job.started_at == now
        assert job.attempts == 1
        assert await store.get(job.job_id) == job
    rest = await store.claim(lease_owner="w2", lease_seconds=30, limit=10, now=now)
    assert [j.job_id for j in rest] == ["job-0003", "job-0004"]
    assert await store.claim(lease_owner="w3", lease_seconds=30, limit=10, now=now) == []


async def test_concurrent_claims_never_share_a_job(backend: Backend) -> None:
    stores = [await backend.open() for _ in range(3)]
    await create_jobs(stores[0], 40)
    batches = await asyncio.gather(
        *(
            store.claim(lease_owner=f"w{i}-{k}", lease_seconds=30, limit=3, now=T0 + 100)
            for k in range(4)
            for i, store in enumerate(stores)
        )
    )
    claimed = [job.job_id for batch in batches for job in batch]
    assert len(claimed) == len(set(claimed)) == 36
    for batch in batches:
        for job in batch:
            stored = await stores[0].get(job.job_id)
            assert stored is not None
            assert stored.lease_owner == job.lease_owner


async def test_renew_extends_only_the_owners_running_leases(store: JobStore) -> None:
    await create_jobs(store, 3)
    mine = await run_one(store, lease_owner="me", now=T0 + 100)
    theirs = await run_one(store, lease_owner="them", now=T0 + 100)
    await store.renew(
        [mine.job_id, theirs.job_id, "job-0002", "unknown"],
        lease_owner="me",
        lease_seconds=60,
        now=T0 + 120,
    )
    assert (await store.get(mine.job_id)) == mine.evolve(lease_expires_at=T0 + 180)
    assert (await store.get(theirs.job_id)) == theirs
    pending = await store.get("job-0002")
    assert pending is not None
    assert pending.status is JobStatus.PENDING
    assert pending.lease_expires_at is None


async def test_requeue_expired_retries_and_counts_attempts(store: JobStore) -> None:
    await create_jobs(store, 2)
    first = await run_one(store, now=T0 + 100)
    live = await run_one(store, now=T0 + 125)
    result = await store.requeue_expired(now=T0 + 140, max_attempts=3)
    assert list(result.retried) == [first.job_id]
    assert list(result.failed) == []
    assert list(result.cancelled) == []
    back = await store.get(first.job_id)
    assert back is not None
    assert back.status is JobStatus.PENDING
    assert back.lease_owner is None
    assert back.lease_expires_at is None
    assert back.attempts == 1
    assert await store.get(live.job_id) == live
    again = await run_one(store, lease_owner="w2", now=T0 + 150)
    assert again.job_id == first.job_id
    assert again.attempts == 2


async def test_requeue_expired_leaves_unexpired_leases(store: JobStore) -> None:
    await create_jobs(store, 1)
    job = await run_one(store, now=T0 + 100)
    result = await store.requeue_expired(now=T0 + 130, max_attempts=3)
    assert list(result.retried) == []
    assert await store.get(job.job_id) == job


async def test_requeue_expired_fails_a_job_out_of_attempts(store: JobStore) -> None:
    await create_jobs(store, 1)
    for attempt in range(2):
        await run_one(store, now=T0 + 100 * (attempt + 1))
        result = await store.requeue_expired(now=T0 + 100 * (attempt + 1) + 31, max_attempts=2)
    assert list(result.retried) == []
    (failed,) = result.failed
    assert failed.job_id == "job-0000"
    assert failed.status is JobStatus.FAILED
    assert failed.attempts == 2
    assert failed.error is not None
    assert "2 attempts" in failed.error
    assert failed.finished_at == T0 + 231
    assert failed.lease_owner is None
    assert await store.get(failed.job_id) == failed
    assert await store.claim(lease_owner="w", lease_seconds=30, limit=5, now=T0 + 300) == []


async def test_requeue_expired_cancels_a_job_asked_to_cancel(store: JobStore) -> None:
    await create_jobs(store, 1)
    job = await run_one(store, now=T0 + 100)
    await store.request_cancel(job.job_id)
    result = await store.requeue_expired(now=T0 + 200, max_attempts=5)
    assert list(result.retried) == []
    (cancelled,) = result.cancelled
    assert cancelled.status is JobStatus.CANCELLED
    assert await store.get(job.job_id) == cancelled


async def test_requeue_everything_at_start_up_keeps_timestamps_finite(store: JobStore) -> None:
    """An exclusive store's owner requeues every Running job with ``now=inf`` at start-up."""
    await create_jobs(store, 3)
    for n in range(3):
        await run_one(store, now=T0 + 100 + n)
    await store.request_cancel("job-0001")
    first = await store.requeue_expired(now=math.inf, max_attempts=2)
    assert sorted(first.retried) == ["job-0000", "job-0002"]
    assert [j.job_id for j in first.cancelled] == ["job-0001"]
    await store.claim(lease_owner="w", lease_seconds=1e9, limit=5, now=T0 + 300)
    second = await store.requeue_expired(now=math.inf, max_attempts=2)
    assert sorted(j.job_id for j in second.failed) == ["job-0000", "job-0002"]
    for job in (await store.list()).jobs:
        assert math.isfinite(job.updated_at)
        assert job.finished_at is not None
        assert math.isfinite(job.finished_at)


async def test_requeue_expired_queues_callbacks_of_the_jobs_it_ends(store: JobStore) -> None:
    """The failure and cancellation callbacks are written with the jobs' final states."""
    await create_jobs(store, 3)
    for n in range(3):
        await run_one(store, now=T0 + 100 + n)
    await store.request_cancel("job-0001")

    def callback(job: Job) -> Delivery | None:
        if job.job_id == "job-0002":
            return None
        return make_delivery(job, payload={"status": str(job.status)})

    outcome = await store.requeue_expired(now=math.inf, max_attempts=1, delivery=callback)
    assert [j.job_id for j in outcome.failed] == ["job-0000", "job-0002"]
    assert [j.job_id for j in outcome.cancelled] == ["job-0001"]
    (failed,) = await store.deliveries_for("job-0000")
    assert failed.payload == {"status": "Failed"}
    (cancelled,) = await store.deliveries_for("job-0001")
    assert cancelled.payload == {"status": "Cancelled"}
    assert await store.deliveries_for("job-0002") == []
    assert {d.job_id for d in await store.due_deliveries(now=T0 + 1e6, limit=10)} == {
        "job-0000",
        "job-0001",
    }


async def test_requeue_expired_with_callbacks_is_all_or_nothing(store: JobStore) -> None:
    """A callback that cannot be written leaves the jobs Running, to be swept again."""
    await create_jobs(store, 2)
    running = [await run_one(store, now=T0 + 100 + n) for n in range(2)]
    taken = make_delivery(running[0], n=7)
    await store.add_delivery(taken)

    def clashing(job: Job) -> Delivery:
        return make_delivery(job, delivery_id=taken.delivery_id)

    with pytest.raises(ValueError, match="already exists"):
        await store.requeue_expired(now=math.inf, max_attempts=1, delivery=clashing)
    for job in running:
        assert await store.get(job.job_id) == job
    assert await store.deliveries_for(running[1].job_id) == []


async def test_set_progress_only_moves_running_jobs(store: JobStore) -> None:
    await create_jobs(store, 2)
    job = await run_one(store)
    await store.set_progress(job.job_id, 42.5)
    await store.set_progress("job-0001", 10)
    await store.set_progress("unknown", 10)
    assert await store.get(job.job_id) == job.evolve(progress_percent=42.5)
    pending = await store.get("job-0001")
    assert pending is not None
    assert pending.progress_percent == 0.0


IMAGE = {
    "format": "aperio",
    "width": 2220,
    "height": 2967,
    "mpp": 0.499,
    "levels": [{"width": 2220, "height": 2967, "downsample": 1.0}],
}


async def test_image_is_none_until_set_and_only_set_while_running(store: JobStore) -> None:
    await create_jobs(store, 2)
    job = await run_one(store)
    assert job.image is None
    await store.set_image(job.job_id, IMAGE)
    await store.set_image("job-0001", IMAGE)
    await store.set_image("unknown", IMAGE)
    assert await store.get(job.job_id) == job.evolve(image=IMAGE)
    pending = await store.get("job-0001")
    assert pending is not None
    assert pending.image is None
    (listed,) = [j for j in (await store.list()).jobs if j.job_id == job.job_id]
    assert listed.image == IMAGE


async def test_final_writes_keep_the_image(store: JobStore) -> None:
    await create_jobs(store, 1)
    job = await run_one(store)
    await store.set_image(job.job_id, IMAGE)
    # The job handed to finish may predate the image: the store keeps what it holds.
    done = job.moved_to(JobStatus.COMPLETED, T0 + 110)
    await store.finish(done, expected=JobStatus.RUNNING, result=feature(job.job_id))
    stored = await store.get(job.job_id)
    assert stored is not None
    assert stored.status is JobStatus.COMPLETED
    assert stored.image == IMAGE


# --- finish -------------------------------------------------------------------------------


async def test_finish_writes_status_and_result(store: JobStore) -> None:
    await create_jobs(store, 1)
    running = await run_one(store)
    done = running.moved_to(JobStatus.COMPLETED, T0 + 110)
    await store.finish(done, expected=JobStatus.RUNNING, result=feature(done.job_id))
    assert await store.get(done.job_id) == done
    assert await store.get_result(done.job_id) == feature(done.job_id)


async def test_result_of_unknown_or_unfinished_job_is_none(store: JobStore) -> None:
    await create_jobs(store, 1)
    assert await store.get_result("job-0000") is None
    assert await store.get_result("unknown") is None


async def test_finish_is_compare_and_set(store: JobStore) -> None:
    await create_jobs(store, 1)
    running = await run_one(store)
    failed = running.moved_to(JobStatus.FAILED, T0 + 110, error="boom")
    await store.finish(failed, expected=JobStatus.RUNNING)
    done = running.moved_to(JobStatus.COMPLETED, T0 + 111)
    delivery = Delivery("d-1", done.job_id, "https://cb.example", {"x": 1}, created_at=T0)
    with pytest.raises(StaleJob):
        await store.finish(
            done, expected=JobStatus.RUNNING, result=feature(done.job_id), delivery=delivery
        )
    assert await store.get(done.job_id) == failed
    assert await store.get_result(done.job_id) is None
    assert await store.deliveries_for(done.job_id) == []


async def test_finish_of_an_unknown_job_is_stale(store: JobStore) -> None:
    ghost = make_job(99).moved_to(JobStatus.FAILED, T0)
    with pytest.raises(StaleJob):
        await store.finish(ghost, expected=JobStatus.PENDING)


async def test_finish_refuses_a_transition_the_machine_forbids(store: JobStore) -> None:
    await create_jobs(store, 1)
    running = await run_one(store)
    done = running.moved_to(JobStatus.COMPLETED, T0 + 110)
    await store.finish(done, expected=JobStatus.RUNNING)
    with pytest.raises(InvalidTransition):
        await store.finish(done.evolve(status=JobStatus.PENDING), expected=JobStatus.COMPLETED)


async def test_finish_keeps_a_cancel_request_made_meanwhile(store: JobStore) -> None:
    await create_jobs(store, 1)
    running = await run_one(store)
    await store.request_cancel(running.job_id)
    retried = running.moved_to(JobStatus.PENDING, T0 + 110)
    await store.finish(retried, expected=JobStatus.RUNNING)
    stored = await store.get(running.job_id)
    assert stored is not None
    assert stored.status is JobStatus.PENDING
    assert stored.cancel_requested


async def test_two_finishers_only_one_wins(backend: Backend) -> None:
    one, two = await backend.open(), await backend.open()
    await create_jobs(one, 1)
    running = await run_one(one)
    outcomes = await asyncio.gather(
        one.finish(running.moved_to(JobStatus.COMPLETED, T0 + 110), expected=JobStatus.RUNNING),
        two.finish(
            running.moved_to(JobStatus.FAILED, T0 + 110, error="x"), expected=JobStatus.RUNNING
        ),
        return_exceptions=True,
    )
    assert sorted(type(o).__name__ for o in outcomes) == ["NoneType", "StaleJob"]


# --- cancel -------------------------------------------------------------------------------


async def test_cancel_a_pending_job_at_once(store: JobStore) -> None:
    await create_jobs(store, 1)
    cancelled = await store.request_cancel("job-0000")
    assert cancelled is not None
    assert cancelled.status is JobStatus.CANCELLED
    assert cancelled.finished_at is not None
    assert await store.get("job-0000") == cancelled


async def test_cancel_a_running_job_sets_the_flag(store: JobStore) -> None:
    await create_jobs(store, 1)
    running = await run_one(store)
    flagged = await store.request_cancel(running.job_id)
    assert flagged is not None
    assert flagged.status is JobStatus.RUNNING
    assert flagged.cancel_requested
    assert flagged.lease_owner == running.lease_owner
    assert await store.get(running.job_id) == flagged
    stopped = flagged.moved_to(JobStatus.CANCELLED, T0 + 120)
    await store.finish(stopped, expected=JobStatus.RUNNING)
    assert await store.get(running.job_id) == stopped


async def test_cancel_a_terminal_job_changes_nothing(store: JobStore) -> None:
    await create_jobs(store, 1)
    running = await run_one(store)
    done = running.moved_to(JobStatus.COMPLETED, T0 + 110)
    await store.finish(done, expected=JobStatus.RUNNING)
    assert await store.request_cancel(done.job_id) == done
    assert await store.get(done.job_id) == done


async def test_cancel_an_unknown_job_is_none(store: JobStore) -> None:
    assert await store.request_cancel("unknown") is None


# --- deliveries ---------------------------------------------------------------------------


def make_delivery(job: Job, n: int = 1, **changes: Any) -> Delivery:
    fields: dict[str, Any] = {
        "delivery_id": f"{job.job_id}-d{n}",
        "job_id": job.job_id,
        "url": "https://lims.example/callback",
        "payload": feature(job.job_id),
        "token": "tok",
        "next_attempt_at": T0 + 200,
        "created_at": T0 + 200,
    }
    fields.update(changes)
    return Delivery(**fields)


async def test_finish_with_a_delivery_makes_it_due(store: JobStore) -> None:
    await create_jobs(store, 1)
    running = await run_one(store)
    done = running.moved_to(JobStatus.COMPLETED, T0 + 200)
    delivery = make_delivery(done)
    await store.finish(
        done, expected=JobStatus.RUNNING, result=feature(done.job_id), delivery=delivery
    )
    assert await store.due_deliveries(now=T0 + 199, limit=10) == []
    assert await store.due_deliveries(now=T0 + 200, limit=10) == [delivery]
    assert await store.deliveries_for(done.job_id) == [delivery]


async def test_record_attempt_appends_in_order(store: JobStore) -> None:
    await create_jobs(store, 1)
    running = await run_one(store)
    done = running.moved_to(JobStatus.FAILED, T0 + 200, error="bad image")
    delivery = make_delivery(done, token=None)
    await store.finish(done, expected=JobStatus.RUNNING, delivery=delivery)
    first = DeliveryAttempt(at=T0 + 200, status_code=None, error="connection refused", duration=0.5)
    second = DeliveryAttempt(at=T0 + 260, status_code=503, error=None, duration=1.25)
    third = DeliveryAttempt(at=T0 + 400, status_code=204, error=None, duration=0.01)
    await store.record_attempt(
        delivery.delivery_id, first, status=DeliveryStatus.PENDING, next_attempt_at=T0 + 260
    )
    assert await store.due_deliveries(now=T0 + 259, limit=10) == []
    (due,) = await store.due_deliveries(now=T0 + 260, limit=10)
    assert due == delivery.evolve(attempts=(first,), next_attempt_at=T0 + 260)
    await store.record_attempt(
        delivery.delivery_id, second, status=DeliveryStatus.PENDING, next_attempt_at=T0 + 400
    )
    await store.record_attempt(
        delivery.delivery_id, third, status=DeliveryStatus.DELIVERED, next_attempt_at=None
    )
    (stored,) = await store.deliveries_for(done.job_id)
    assert stored.attempts == (first, second, third)
    assert stored.status is DeliveryStatus.DELIVERED
    assert stored.next_attempt_at == T0 + 400
    assert await store.due_deliveries(now=T0 + 10_000, limit=10) == []


async def test_record_attempt_for_an_unknown_delivery_raises(store: JobStore) -> None:
    attempt = DeliveryAttempt(at=T0, status_code=200, error=None, duration=0.1)
    with pytest.raises(KeyError):
        await store.record_attempt(
            "unknown", attempt, status=DeliveryStatus.DELIVERED, next_attempt_at=None
        )


async def test_due_deliveries_oldest_first_up_to_the_limit(store: JobStore) -> None:
    jobs = await create_jobs(store, 3)
    deliveries = [
        make_delivery(jobs[0], next_attempt_at=T0 + 30),
        make_delivery(jobs[1], next_attempt_at=T0 + 10),
        make_delivery(jobs[2], next_attempt_at=T0 + 20),
        make_delivery(jobs[2], n=2, next_attempt_at=T0 + 5000),
    ]
    for delivery in deliveries:
        await store.add_delivery(delivery)
    # Failed attempts of the first due: the limit counts deliveries, not attempts.
    for k in range(3):
        failed = DeliveryAttempt(at=T0 + k, status_code=503, error=None, duration=0.1)
        await store.record_attempt(
            deliveries[1].delivery_id,
            failed,
            status=DeliveryStatus.PENDING,
            next_attempt_at=T0 + 10,
        )
    due = await store.due_deliveries(now=T0 + 1000, limit=2)
    assert [d.job_id for d in due] == ["job-0001", "job-0002"]
    assert [len(d.attempts) for d in due] == [3, 0]
    assert [a.at for a in due[0].attempts] == [T0, T0 + 1, T0 + 2]
    assert len(await store.due_deliveries(now=T0 + 1000, limit=10)) == 3


async def test_deliveries_for_lists_a_jobs_redeliveries(store: JobStore) -> None:
    jobs = await create_jobs(store, 2)
    first = make_delivery(jobs[0], n=1, created_at=T0 + 1)
    again = make_delivery(jobs[0], n=2, created_at=T0 + 2)
    other = make_delivery(jobs[1], n=1)
    for delivery in (again, other, first):
        await store.add_delivery(delivery)
    assert await store.deliveries_for(jobs[0].job_id) == [first, again]
    assert await store.deliveries_for("unknown") == []


# --- counts -------------------------------------------------------------------------------


async def test_count_by_status(store: JobStore) -> None:
    assert dict(await store.count_by_status()) == {}
    await create_jobs(store, 3, algorithm="a")
    await store.create(make_job(10, algorithm="b"))
    await run_one(store)
    await store.request_cancel("job-0002")
    assert dict(await store.count_by_status()) == {
        ("a", JobStatus.RUNNING): 1,
        ("a", JobStatus.PENDING): 1,
        ("a", JobStatus.CANCELLED): 1,
        ("b", JobStatus.PENDING): 1,
    }


# --- only the SQL stores ------------------------------------------------------------------


async def test_add_delivery_needs_a_job_and_a_new_id(store: JobStore) -> None:
    (job,) = await create_jobs(store, 1)
    with pytest.raises(KeyError):
        await store.add_delivery(make_delivery(make_job(99)))
    await store.add_delivery(make_delivery(job))
    with pytest.raises(ValueError, match="already exists"):
        await store.add_delivery(make_delivery(job))


async def test_everything_survives_close_and_reopen(sql_backend: Backend) -> None:
    first = await sql_backend.open()
    jobs = await create_jobs(first, 3)
    running = await run_one(first)
    done = running.moved_to(JobStatus.COMPLETED, T0 + 200)
    delivery = make_delivery(done)
    await first.finish(
        done, expected=JobStatus.RUNNING, result=feature(done.job_id), delivery=delivery
    )
    attempt = DeliveryAttempt(at=T0 + 201, status_code=500, error=None, duration=0.2)
    await first.record_attempt(
        delivery.delivery_id, attempt, status=DeliveryStatus.PENDING, next_attempt_at=T0 + 300
    )
    await sql_backend.close_all()

    second = await sql_backend.open()
    assert second is not first
    assert await second.get(done.job_id) == done
    assert [j.job_id for j in (await second.list()).jobs] == [j.job_id for j in reversed(jobs)]
    assert await second.get_result(done.job_id) == feature(done.job_id)
    assert await second.deliveries_for(done.job_id) == [
        delivery.evolve(attempts=(attempt,), next_attempt_at=T0 + 300)
    ]


async def _schema_state(store: JobStore) -> tuple[list[str], list[Any]]:
    """The alembic revision, and any difference between the migrated schema and tables.py."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlalchemy import Connection

    from primaa.store.sql import SqlStore
    from primaa.store.tables import metadata

    assert isinstance(store, SqlStore)

    def inspect(conn: Connection) -> tuple[list[str], list[Any]]:
        context = MigrationContext.configure(conn)
        return list(context.get_current_heads()), compare_metadata(context, metadata)

    return await store.run_sqlalchemy(inspect)


async def test_migrations_match_the_tables_and_are_idempotent(sql_backend: Backend) -> None:
    store = await sql_backend.open()
    await create_jobs(store, 2)
    assert await _schema_state(store) == (["0008"], [])
    await store.open()
    again = await sql_backend.open()
    assert await _schema_state(again) == (["0008"], [])
    assert len((await again.list()).jobs) == 2


async def test_migration_0005_adds_and_drops_the_image_column_keeping_jobs(
    sql_backend: Backend,
) -> None:
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import Connection

    import primaa.store

    store = await sql_backend.open()
    await create_jobs(store, 2)

    def migrate(revision: str, *, down: bool = False) -> Callable[[Connection], None]:
        def run(conn: Connection) -> None:
            config = Config()
            location = pathlib.Path(primaa.store.__file__).with_name("migrations")
            config.set_main_option("script_location", str(location))
            config.attributes["connection"] = conn
            (command.downgrade if down else command.upgrade)(config, revision)

        return run

    await store.run_sqlalchemy(migrate("0004", down=True))
    state, _ = await _schema_state(store)
    assert state == ["0004"]
    await store.run_sqlalchemy(migrate("head"))
    assert await _schema_state(store) == (["0008"], [])
    job = await run_one(store)
    assert job.image is None
    await store.set_image(job.job_id, IMAGE)
    assert (await store.get(job.job_id)) == job.evolve(image=IMAGE)
    assert len((await store.list()).jobs) == 2


def test_jobs_columns_follow_the_job_fields() -> None:
    """tables.py keeps the jobs columns in the order of the Job fields, so the schema
    reads like the model (rows are decoded by column name)."""
    from primaa.store.tables import jobs

    assert [c.name for c in jobs.columns] == [f.name for f in dataclasses.fields(Job)]


async def test_sqlite_pragmas(tmp_path: pathlib.Path) -> None:
    from sqlalchemy import text

    from primaa.store.sql import SqlStore
    from primaa.store.sql_engine import SQLITE_BUSY_TIMEOUT_MS

    store = SqlStore(f"sqlite:///{tmp_path / 'p.sqlite3'}")
    await store.open()
    try:
        pragmas = await store.run(
            lambda conn: {
                name: conn.execute(text(f"PRAGMA {name}")).scalar()
                for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
            }
        )
    finally:
        await store.close()
    assert pragmas["journal_mode"] == "wal"
    assert pragmas["synchronous"] == 1  # NORMAL
    assert pragmas["foreign_keys"] == 1
    assert pragmas["busy_timeout"] == SQLITE_BUSY_TIMEOUT_MS


# --- the factory --------------------------------------------------------------------------


async def test_factory_memory() -> None:
    from primaa.store.factory import open_store_from_url

    assert isinstance(open_store_from_url("memory://"), MemoryStore)


@pytest.mark.parametrize(
    ("url", "driver", "exclusive"),
    [
        ("sqlite:////tmp/x/primaa.sqlite3", "sqlite", True),
        ("sqlite+aiosqlite:///relative.sqlite3", "sqlite", True),
        ("postgresql://u:p@db:5432/primaa", "postgresql+asyncpg", False),
        ("postgres://u@db/primaa", "postgresql+asyncpg", False),
        ("postgresql+asyncpg://u@db/primaa", "postgresql+asyncpg", False),
    ],
)
async def test_factory_picks_the_driver(url: str, driver: str, exclusive: bool) -> None:
    from primaa.store.factory import open_store_from_url
    from primaa.store.sql import SqlStore

    if driver.endswith("asyncpg"):
        pytest.importorskip("asyncpg")
    store = open_store_from_url(url)
    assert isinstance(store, SqlStore)
    assert store.url.drivername == driver
    assert store.exclusive is exclusive
    await store.close()


@pytest.mark.parametrize(
    "url",
    ["mysql://u@db/primaa", "sqlite+pysqlcipher:///x.sqlite3", "sqlite://", "sqlite:///:memory:"],
)
def test_factory_refuses_what_it_cannot_serve(url: str) -> None:
    from primaa.store.factory import open_store_from_url

    with pytest.raises(ValueError, match=r"SQLite|scheme|driver"):
        open_store_from_url(url)


async def test_get_with_deliveries_reads_a_job_and_its_deliveries_at_once(
    store: JobStore,
) -> None:
    jobs = await create_jobs(store, 3)
    first = make_delivery(jobs[0], n=1, created_at=T0 + 1)
    again = make_delivery(jobs[0], n=2, created_at=T0 + 2)
    other = make_delivery(jobs[1], n=1)
    for delivery in (again, other, first):
        await store.add_delivery(delivery)
    for k in range(2):
        attempt = DeliveryAttempt(at=T0 + k, status_code=503, error="busy", duration=0.25)
        await store.record_attempt(
            first.delivery_id, attempt, status=DeliveryStatus.PENDING, next_attempt_at=T0 + 9
        )
    assert await store.get_with_deliveries(jobs[0].job_id) == (
        await store.get(jobs[0].job_id),
        [delivery.record() for delivery in await store.deliveries_for(jobs[0].job_id)],
    )
    found = await store.get_with_deliveries(jobs[0].job_id)
    assert found is not None
    deliveries = found[1]
    assert [d.delivery_id for d in deliveries] == [first.delivery_id, again.delivery_id]
    assert [a.at for a in deliveries[0].attempts] == [T0, T0 + 1]
    assert await store.get_with_deliveries(jobs[2].job_id) == (
        await store.get(jobs[2].job_id),
        [],
    )
    assert await store.get_with_deliveries("unknown") is None
