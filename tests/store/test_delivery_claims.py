"""Deliveries are claimed before they are sent: one sender per attempt, a few per receiver.

Part of the store contract, run on the memory store, SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio

import pytest

from primaa.jobs.model import Delivery, DeliveryAttempt, DeliveryStatus
from primaa.jobs.storage import JobStore, LostClaim
from tests.store.test_store_contract import T0, Backend, create_jobs, make_delivery

NOW = T0 + 1000
OK = DeliveryAttempt(at=NOW, status_code=200, error=None, duration=0.1)


async def _queue(store: JobStore, hosts: dict[str, int]) -> list[Delivery]:
    """``count`` deliveries to each ``http://host/cb``, older first in the order given."""
    queued = []
    n = 0
    for host, count in hosts.items():
        for _ in range(count):
            (job,) = await create_jobs(store, 1, job_id=f"job-{n:04d}")
            delivery = make_delivery(
                job, url=f"http://{host}/cb", next_attempt_at=T0 + n, created_at=T0 + n
            )
            await store.add_delivery(delivery)
            queued.append(delivery)
            n += 1
    return queued


async def _claim(
    store: JobStore, holder: str = "a", *, now: float = NOW, limit: int = 100, per_host: int = 100
) -> list[str]:
    claimed = await store.claim_deliveries(
        holder=holder, now=now, claim_seconds=15, limit=limit, per_host=per_host
    )
    return [d.delivery_id for d in claimed]


async def test_claim_takes_due_deliveries_oldest_first_once(store: JobStore) -> None:
    queued = await _queue(store, {"one.example": 5})
    ids = [d.delivery_id for d in queued]
    assert await _claim(store, now=T0 + 2.5) == ids[:3]
    assert await _claim(store, "b", now=T0 + 2.5) == []
    assert await _claim(store, "b", now=T0 + 10, limit=1) == ids[3:4]
    assert await _claim(store, "b", now=T0 + 10) == ids[4:]
    # Claimed deliveries are still due: flush_callbacks waits for them.
    assert len(await store.due_deliveries(now=T0 + 10, limit=10)) == 5


async def test_claimed_deliveries_carry_their_attempts(store: JobStore) -> None:
    (queued,) = await _queue(store, {"one.example": 1})
    failed = DeliveryAttempt(at=T0, status_code=503, error="HTTP 503", duration=0.2)
    await store.record_attempt(
        queued.delivery_id, failed, status=DeliveryStatus.PENDING, next_attempt_at=T0 + 5
    )
    (claimed,) = await store.claim_deliveries(
        holder="a", now=NOW, claim_seconds=15, limit=10, per_host=4
    )
    assert claimed == queued.evolve(attempts=(failed,), next_attempt_at=T0 + 5)


async def test_a_saturated_host_does_not_hold_up_the_others(store: JobStore) -> None:
    queued = await _queue(store, {"slow.example": 6, "fast.example": 3, "x.example:8443": 1})
    slow, fast, other = queued[:6], queued[6:9], queued[9:]
    first = await _claim(store, limit=5, per_host=2)
    # Oldest first, but no more than two to one host: the slow host's older
    # deliveries do not take the places of the fast one's.
    assert first == [d.delivery_id for d in (*slow[:2], *fast[:2], *other)]
    assert await _claim(store, "b", per_host=2) == []
    await store.record_attempt(
        slow[0].delivery_id, OK, status=DeliveryStatus.DELIVERED, next_attempt_at=None, holder="a"
    )
    await store.record_attempt(
        fast[0].delivery_id, OK, status=DeliveryStatus.DELIVERED, next_attempt_at=None, holder="a"
    )
    assert await _claim(store, "b", per_host=2) == [slow[2].delivery_id, fast[2].delivery_id]


async def test_a_host_counts_every_holders_claims(store: JobStore) -> None:
    queued = await _queue(store, {"one.example": 4})
    assert await _claim(store, "a", per_host=3, limit=2) == [d.delivery_id for d in queued[:2]]
    assert await _claim(store, "b", per_host=3) == [queued[2].delivery_id]


async def test_an_expired_claim_is_taken_over_and_fences_its_old_holder(store: JobStore) -> None:
    (queued,) = await _queue(store, {"one.example": 1})
    assert await _claim(store, "dead", now=NOW) == [queued.delivery_id]
    assert await _claim(store, "live", now=NOW + 15) == []
    assert await _claim(store, "live", now=NOW + 15.5) == [queued.delivery_id]
    with pytest.raises(LostClaim):
        await store.record_attempt(
            queued.delivery_id,
            OK,
            status=DeliveryStatus.DELIVERED,
            next_attempt_at=None,
            holder="dead",
        )
    await store.record_attempt(
        queued.delivery_id,
        OK,
        status=DeliveryStatus.DELIVERED,
        next_attempt_at=None,
        holder="live",
    )
    (stored,) = await store.deliveries_for(queued.job_id)
    assert stored.attempts == (OK,)
    assert stored.status is DeliveryStatus.DELIVERED


async def test_an_expired_claim_nobody_took_still_records(store: JobStore) -> None:
    (queued,) = await _queue(store, {"one.example": 1})
    await _claim(store, "slow", now=NOW)
    await store.record_attempt(
        queued.delivery_id,
        OK,
        status=DeliveryStatus.DELIVERED,
        next_attempt_at=None,
        holder="slow",
    )
    assert await _claim(store, "other", now=NOW + 100) == []


async def test_a_failed_attempt_gives_the_claim_up_until_its_retry(store: JobStore) -> None:
    (queued,) = await _queue(store, {"one.example": 1})
    await _claim(store, "a")
    failed = DeliveryAttempt(at=NOW, status_code=500, error="HTTP 500", duration=0.1)
    await store.record_attempt(
        queued.delivery_id,
        failed,
        status=DeliveryStatus.PENDING,
        next_attempt_at=NOW + 5,
        holder="a",
    )
    assert await _claim(store, "b", now=NOW + 4) == []
    assert await _claim(store, "b", now=NOW + 5, per_host=1) == [queued.delivery_id]


async def test_released_claims_are_due_again_at_once(store: JobStore) -> None:
    queued = await _queue(store, {"one.example": 3})
    ids = [d.delivery_id for d in queued]
    assert await _claim(store, "a") == ids
    await store.release_deliveries(ids[:2], holder="someone else")
    assert await _claim(store, "b") == []
    await store.release_deliveries(ids[:2], holder="a")
    assert await _claim(store, "b") == ids[:2]
    await store.release_deliveries(None, holder="c")
    assert await _claim(store, "c") == ids
    (stored, *_) = await store.deliveries_for(queued[0].job_id)
    assert stored.attempts == ()


async def test_record_attempt_of_an_unknown_delivery_is_a_key_error_not_lost_claim(
    store: JobStore,
) -> None:
    with pytest.raises(KeyError) as raised:
        await store.record_attempt(
            "unknown", OK, status=DeliveryStatus.DELIVERED, next_attempt_at=None, holder="a"
        )
    assert not isinstance(raised.value, LostClaim)


async def test_concurrent_claims_never_share_a_delivery(backend: Backend) -> None:
    stores = [await backend.open() for _ in range(3)]
    await _queue(stores[0], {f"h{k}.example": 12 for k in range(3)})
    batches = await asyncio.gather(
        *(
            _claim(store, f"w{i}-{k}", limit=3, per_host=100)
            for k in range(4)
            for i, store in enumerate(stores)
        )
    )
    claimed = [delivery_id for batch in batches for delivery_id in batch]
    assert len(claimed) == len(set(claimed)) == 36
