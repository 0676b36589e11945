"""An in-memory :class:`~primaa.jobs.storage.JobStore` for tests and throw-away runs.

It keeps the SQL store's semantics (compare-and-set transitions, lease rules,
cursor format, ordering) so tests written against it hold for the real store.
No method awaits while it reads and writes its dictionaries, so on one event
loop every method is atomic without a lock. JSON values are copied on the way
in, as the SQL store does by serialising them, so callers cannot alias them.
"""

from __future__ import annotations

import builtins
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from primaa.jobs.model import (
    Delivery,
    DeliveryAttempt,
    DeliveryRecord,
    DeliveryStatus,
    Job,
    JobState,
    JobStatus,
    check_transition,
)
from primaa.jobs.storage import (
    AlgorithmFilter,
    Deleted,
    JobPage,
    LostClaim,
    Requeued,
    StaleJob,
)
from primaa.store.common import (
    EXPIRED_ERROR,
    check_limit,
    decode_cursor,
    encode_cursor,
    receiver_host,
)


def _no_delivery(_job: Job) -> Delivery | None:
    return None


def _json_copy(value: Mapping[str, Any]) -> dict[str, Any]:
    copied: dict[str, Any] = json.loads(json.dumps(value))
    return copied


class MemoryStore:
    """Jobs, results and deliveries in dictionaries; gone when the process ends."""

    exclusive = True

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._results: dict[str, dict[str, Any]] = {}
        self._deliveries: dict[str, Delivery] = {}
        #: Claimed deliveries: their holder and until when.
        self._claims: dict[str, tuple[str, float]] = {}

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def check_writable(self) -> None:
        pass

    async def create(self, job: Job) -> None:
        if job.job_id in self._jobs:
            raise ValueError(f"job {job.job_id} already exists")
        self._jobs[job.job_id] = job.evolve(parameters=_json_copy(job.parameters))

    async def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    async def get_with_deliveries(
        self, job_id: str
    ) -> tuple[Job, builtins.list[DeliveryRecord]] | None:
        job = self._jobs.get(job_id)
        if job is None:
            return None
        return job, [delivery.record() for delivery in await self.deliveries_for(job_id)]

    async def state(self, job_id: str) -> JobState | None:
        job = self._jobs.get(job_id)
        return None if job is None else JobState(job.status, job.error, job.client_id)

    async def list(
        self,
        *,
        status: JobStatus | None = None,
        algorithm: str | None = None,
        client_id: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> JobPage:
        check_limit(limit)
        after = decode_cursor(cursor) if cursor is not None else None
        rows = [
            job
            for job in self._jobs.values()
            if (status is None or job.status is status)
            and (algorithm is None or job.algorithm == algorithm)
            and (client_id is None or job.client_id == client_id)
            and (after is None or (job.created_at, job.job_id) < after)
        ]
        rows.sort(key=lambda job: (job.created_at, job.job_id), reverse=True)
        page = rows[:limit]
        more = len(rows) > limit
        next_cursor = encode_cursor(page[-1].created_at, page[-1].job_id) if more else None
        return JobPage(jobs=page, next_cursor=next_cursor)

    async def claim(
        self,
        *,
        lease_owner: str,
        lease_seconds: float,
        limit: int,
        now: float,
        algorithms: AlgorithmFilter | None = None,
    ) -> builtins.list[Job]:
        pending = sorted(
            (
                job
                for job in self._jobs.values()
                if job.status is JobStatus.PENDING
                and (algorithms is None or algorithms.admits(job.algorithm))
            ),
            key=lambda job: (job.created_at, job.job_id),
        )
        claimed = []
        for job in pending[: max(limit, 0)]:
            running = job.moved_to(
                JobStatus.RUNNING,
                now,
                lease_owner=lease_owner,
                lease_expires_at=now + lease_seconds,
            )
            self._jobs[job.job_id] = running
            claimed.append(running)
        return claimed

    async def renew(
        self, job_ids: Sequence[str], *, lease_owner: str, lease_seconds: float, now: float
    ) -> None:
        for job_id in job_ids:
            job = self._jobs.get(job_id)
            if (
                job is not None
                and job.status is JobStatus.RUNNING
                and job.lease_owner == lease_owner
            ):
                self._jobs[job_id] = job.evolve(lease_expires_at=now + lease_seconds)

    async def requeue_expired(
        self,
        *,
        now: float,
        max_attempts: int,
        delivery: Callable[[Job], Delivery | None] | None = None,
    ) -> Requeued:
        # ``now=inf`` (every Running job, at start-up) must not become a timestamp.
        stamp = now if math.isfinite(now) else time.time()
        changed: dict[str, Job] = {}
        retried: list[str] = []
        failed: list[Job] = []
        cancelled: list[Job] = []
        for job in list(self._jobs.values()):
            if job.status is not JobStatus.RUNNING or job.lease_expires_at is None:
                continue
            if job.lease_expires_at >= now:
                continue
            if job.cancel_requested:
                stopped = job.moved_to(JobStatus.CANCELLED, stamp)
                changed[job.job_id] = stopped
                cancelled.append(stopped)
            elif job.attempts >= max_attempts:
                gone = job.moved_to(
                    JobStatus.FAILED, stamp, error=EXPIRED_ERROR.format(job.attempts)
                )
                changed[job.job_id] = gone
                failed.append(gone)
            else:
                changed[job.job_id] = job.moved_to(JobStatus.PENDING, stamp)
                retried.append(job.job_id)
        # Build every delivery before writing anything: all or nothing, like a transaction.
        queued = [d for d in map(delivery or _no_delivery, (*failed, *cancelled)) if d is not None]
        for d in queued:
            if d.delivery_id in self._deliveries:
                raise ValueError(f"delivery {d.delivery_id} already exists")
        self._jobs.update(changed)
        for d in queued:
            self._deliveries[d.delivery_id] = d.evolve(payload=_json_copy(d.payload))
        return Requeued(retried=retried, failed=failed, cancelled=cancelled)

    async def set_progress(self, job_id: str, progress_percent: float) -> None:
        job = self._jobs.get(job_id)
        if job is not None and job.status is JobStatus.RUNNING:
            self._jobs[job_id] = job.evolve(progress_percent=progress_percent)

    async def set_image(self, job_id: str, image: Mapping[str, Any]) -> None:
        job = self._jobs.get(job_id)
        if job is not None and job.status is JobStatus.RUNNING:
            self._jobs[job_id] = job.evolve(image=_json_copy(image))

    async def request_cancel(self, job_id: str) -> Job | None:
        job = self._jobs.get(job_id)
        if job is None or job.status.is_terminal:
            return job
        now = time.time()
        if job.status is JobStatus.PENDING:
            changed = job.moved_to(JobStatus.CANCELLED, now)
        else:
            changed = job.evolve(cancel_requested=True, updated_at=now)
        self._jobs[job_id] = changed
        return changed

    async def finish(
        self,
        job: Job,
        *,
        expected: JobStatus,
        result: Mapping[str, Any] | None = None,
        delivery: Delivery | None = None,
        lease_owner: str | None = None,
    ) -> None:
        check_transition(expected, job.status)
        current = self._jobs.get(job.job_id)
        if current is None or current.status is not expected:
            raise StaleJob(f"job {job.job_id} is no longer {expected}")
        if lease_owner is not None and current.lease_owner != lease_owner:
            raise StaleJob(f"job {job.job_id} is no longer {expected} leased to {lease_owner}")
        if delivery is not None and delivery.delivery_id in self._deliveries:
            raise ValueError(f"delivery {delivery.delivery_id} already exists")
        self._jobs[job.job_id] = job.evolve(
            parameters=current.parameters,
            image=current.image,
            cancel_requested=job.cancel_requested or current.cancel_requested,
        )
        if result is not None:
            self._results[job.job_id] = _json_copy(result)
        if delivery is not None:
            self._deliveries[delivery.delivery_id] = delivery.evolve(
                payload=_json_copy(delivery.payload)
            )

    async def get_result(self, job_id: str) -> Mapping[str, Any] | None:
        result = self._results.get(job_id)
        return None if result is None else _json_copy(result)

    async def delete(self, job_id: str) -> Deleted | None:
        job = self._jobs.get(job_id)
        if job is None:
            return None
        if not job.status.is_terminal:
            raise StaleJob(f"job {job_id} is {job.status}, not finished")
        del self._jobs[job_id]
        for delivery_id in [d.delivery_id for d in self._deliveries.values() if d.job_id == job_id]:
            del self._deliveries[delivery_id]
            self._claims.pop(delivery_id, None)
        return Deleted(self._results.pop(job_id, None))

    async def count_by_status(self) -> Mapping[tuple[str, JobStatus], int]:
        counts: dict[tuple[str, JobStatus], int] = {}
        for job in self._jobs.values():
            key = (job.algorithm, job.status)
            counts[key] = counts.get(key, 0) + 1
        return counts

    async def due_deliveries(self, *, now: float, limit: int) -> builtins.list[Delivery]:
        return self._due(now)[: max(limit, 0)]

    def _due(self, now: float) -> builtins.list[Delivery]:
        due = [
            d
            for d in self._deliveries.values()
            if d.status is DeliveryStatus.PENDING and d.next_attempt_at <= now
        ]
        due.sort(key=lambda d: (d.next_attempt_at, d.created_at, d.delivery_id))
        return due

    async def claim_deliveries(
        self, *, holder: str, now: float, claim_seconds: float, limit: int, per_host: int
    ) -> builtins.list[Delivery]:
        in_flight: dict[str, int] = {}
        for delivery_id, (_, expires) in self._claims.items():
            delivery = self._deliveries[delivery_id]
            if delivery.status is DeliveryStatus.PENDING and expires >= now:
                host = receiver_host(delivery.url)
                in_flight[host] = in_flight.get(host, 0) + 1
        claimed: list[Delivery] = []
        for delivery in self._due(now):
            if len(claimed) >= limit:
                break
            claim = self._claims.get(delivery.delivery_id)
            host = receiver_host(delivery.url)
            if (claim is not None and claim[1] >= now) or in_flight.get(host, 0) >= per_host:
                continue
            in_flight[host] = in_flight.get(host, 0) + 1
            self._claims[delivery.delivery_id] = (holder, now + claim_seconds)
            claimed.append(delivery)
        return claimed

    async def record_attempt(
        self,
        delivery_id: str,
        attempt: DeliveryAttempt,
        *,
        status: DeliveryStatus,
        next_attempt_at: float | None,
        holder: str | None = None,
    ) -> None:
        delivery = self._deliveries.get(delivery_id)
        if delivery is None:
            raise KeyError(delivery_id)
        if holder is not None and self._claims.get(delivery_id, ("",))[0] != holder:
            raise LostClaim(delivery_id)
        self._claims.pop(delivery_id, None)
        self._deliveries[delivery_id] = delivery.evolve(
            attempts=(*delivery.attempts, attempt),
            status=status,
            next_attempt_at=(
                delivery.next_attempt_at if next_attempt_at is None else next_attempt_at
            ),
        )

    async def release_deliveries(self, delivery_ids: Sequence[str] | None, *, holder: str) -> None:
        if delivery_ids is None:
            self._claims.clear()
            return
        for delivery_id in delivery_ids:
            if self._claims.get(delivery_id, ("",))[0] == holder:
                del self._claims[delivery_id]

    async def deliveries_for(self, job_id: str) -> builtins.list[Delivery]:
        found = [d for d in self._deliveries.values() if d.job_id == job_id]
        found.sort(key=lambda d: (d.created_at, d.delivery_id))
        return found

    async def add_delivery(self, delivery: Delivery) -> None:
        if delivery.job_id not in self._jobs:
            raise KeyError(delivery.job_id)
        if delivery.delivery_id in self._deliveries:
            raise ValueError(f"delivery {delivery.delivery_id} already exists")
        self._deliveries[delivery.delivery_id] = delivery.evolve(
            payload=_json_copy(delivery.payload)
        )
