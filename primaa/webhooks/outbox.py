"""Delivers callbacks from the store's outbox, with persisted retries.

Deliveries are written with the job's final state, in the same transaction, so
a callback is never forgotten: this loop only sends what is due and records
each attempt. Each attempt is claimed in the store before it is sent, so several
service replicas on one database never send the same attempt twice, and a claim
whose holder died expires and is taken over. A restart resumes where the last
run left off.

Slots are shared fairly between receivers: at most ``per_host`` deliveries to one
host are in flight (counted in the store, over every process), so a receiver that
hangs until the time limit holds a few slots, never all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import math
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import structlog

from primaa.jobs.model import Delivery, DeliveryAttempt, DeliveryStatus
from primaa.jobs.storage import DeliveryStore, LostClaim
from primaa.webhooks.retry import RetryPolicy
from primaa.webhooks.sender import WebhookSender

log = structlog.get_logger(__name__)

T = TypeVar("T")

AttemptListener = Callable[[Delivery, DeliveryAttempt, DeliveryStatus], None]


@dataclasses.dataclass(frozen=True, slots=True)
class OutboxPolicy:
    #: Deliveries in flight at once from this process.
    concurrency: int = 16
    #: Deliveries in flight at once to one receiver host, over every process.
    per_host: int = 4
    #: How long a claim holds: longer than one attempt (the sender's time limit), so a
    #: live holder always records before anyone else may take the delivery over.
    claim_seconds: float = 15.0
    #: Seconds between claims when nothing wakes the loop (the fallback).
    poll_interval: float = 1.0
    #: After :meth:`Outbox.stop`, how long deliveries in flight may go on; the rest are
    #: cut off and given back, to be sent again (here after a restart, or elsewhere).
    shutdown_grace: float = 2.0


class Outbox:
    """The loop that sends due deliveries; :meth:`wake` it when a new one is queued."""

    def __init__(
        self,
        store: DeliveryStore,
        sender: WebhookSender,
        retry: RetryPolicy,
        policy: OutboxPolicy | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._sender = sender
        self._retry = retry
        self._policy = policy or OutboxPolicy()
        self._clock = clock
        #: This process as the holder of delivery claims.
        self.holder = f"outbox-{uuid.uuid4().hex[:12]}"
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._listeners: list[AttemptListener] = []
        self._in_flight: dict[str, asyncio.Task[bool]] = {}
        #: Store writes under way (attempts, released claims): awaited before run() returns.
        self._writes: set[asyncio.Future[Any]] = set()
        #: When the earliest retry this process scheduled falls due.
        self._retry_at = math.inf

    def on_attempt(self, listener: AttemptListener) -> None:
        self._listeners.append(listener)

    def wake(self) -> None:
        self._wakeup.set()

    def stop(self) -> None:
        """Start no new deliveries, give those in flight the shutdown grace, then return
        from :meth:`run`."""
        self._stopping = True
        self._wakeup.set()

    async def recover(self) -> None:
        """At the start of a store one process owns, give back the claims of a previous run."""
        await self._store.release_deliveries(None, holder=self.holder)

    async def run(self) -> None:
        """Keep up to ``concurrency`` deliveries in flight, each on its own task."""
        try:
            while not self._stopping:
                self._wakeup.clear()
                await self._claim_and_start()
                await self._sleep()
            if self._in_flight:
                grace = self._policy.shutdown_grace
                _, late = await asyncio.wait(list(self._in_flight.values()), timeout=grace)
                if late:
                    log.warning("webhooks_cut_short", in_flight=len(late), grace=grace)
        finally:
            tasks = list(self._in_flight.values())
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.gather(*list(self._writes), return_exceptions=True)

    async def _claim_and_start(self) -> None:
        free = self._policy.concurrency - len(self._in_flight)
        if free <= 0:
            return
        now = self._clock()
        if now >= self._retry_at:
            self._retry_at = math.inf
        try:
            claimed = await self._store.claim_deliveries(
                holder=self.holder,
                now=now,
                claim_seconds=self._policy.claim_seconds,
                limit=free,
                per_host=self._policy.per_host,
            )
        except Exception:
            # The store failed: try again at the next poll, with the deliveries in flight
            # left to finish (a crash of the loop would cut them off).
            log.exception("webhook_claim_failed")
            return
        for delivery in claimed:
            task = asyncio.create_task(self._deliver(delivery), name="primaa-webhook")
            self._in_flight[delivery.delivery_id] = task
            task.add_done_callback(functools.partial(self._done, delivery.delivery_id))

    def _done(self, delivery_id: str, task: asyncio.Task[bool]) -> None:
        self._in_flight.pop(delivery_id, None)
        # A slot is free. Not after a failed write: the next poll retries, rather than
        # spinning while the store is down.
        if not task.cancelled() and task.result():
            self._wakeup.set()

    async def _sleep(self) -> None:
        timeout = self._policy.poll_interval
        if self._retry_at < math.inf:
            timeout = min(timeout, max(0.0, self._retry_at - self._clock()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), timeout)

    def _write(self, write: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run a store write to its end even if the delivery's task is cancelled."""
        task = asyncio.ensure_future(write)
        self._writes.add(task)
        task.add_done_callback(self._write_done)
        return task

    def _write_done(self, task: asyncio.Task[Any]) -> None:
        self._writes.discard(task)
        if not task.cancelled():
            # Marked as read: the delivery's task reads and logs it, unless it was cut
            # off, when the claim expiring is the remedy anyway.
            task.exception()

    async def _release(self, delivery: Delivery) -> None:
        try:
            await self._store.release_deliveries([delivery.delivery_id], holder=self.holder)
        except Exception:
            # The claim then expires on its own, and the delivery is sent after that.
            log.exception("webhook_release_failed", delivery_id=delivery.delivery_id)

    async def _deliver(self, delivery: Delivery) -> bool:
        """Send a claimed delivery and record the attempt; ``False`` when the store failed.

        Cut off while sending (a stop past its grace), the claim is given back: the
        attempt did not happen, and is made again. Once the answer is in, the record is
        written whatever happens, so a delivered callback is never sent again.
        """
        try:
            attempt = await self._sender.send(delivery)
        except asyncio.CancelledError:
            self._write(self._release(delivery))
            raise
        made = len(delivery.attempts) + 1
        next_at: float | None = None
        if attempt.error is None:
            status = DeliveryStatus.DELIVERED
        else:
            delay = self._retry.next_delay(made, attempt.status_code)
            status = DeliveryStatus.FAILED if delay is None else DeliveryStatus.PENDING
            next_at = None if delay is None else self._clock() + delay
        record = self._store.record_attempt(
            delivery.delivery_id,
            attempt,
            status=status,
            next_attempt_at=next_at,
            holder=self.holder,
        )
        try:
            await asyncio.shield(self._write(record))
        except LostClaim:
            # This process stalled past its claim and another took the delivery over:
            # that one's attempt is the one on record.
            log.warning(
                "webhook_attempt_not_recorded",
                job_id=delivery.job_id,
                delivery_id=delivery.delivery_id,
                reason="claim taken over",
            )
            return True
        except Exception:
            # The delivery stays claimed until the claim expires, then is sent again.
            log.exception("webhook_record_failed", delivery_id=delivery.delivery_id)
            return False
        if next_at is not None:
            self._retry_at = min(self._retry_at, next_at)
        log.info(
            "webhook_attempt",
            job_id=delivery.job_id,
            delivery_id=delivery.delivery_id,
            attempt=made,
            status_code=attempt.status_code,
            error=attempt.error,
            outcome=str(status),
        )
        for listener in self._listeners:
            listener(delivery, attempt, status)
        return True
