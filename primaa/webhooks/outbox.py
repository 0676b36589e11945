"""Delivers callbacks from the store's outbox, with persisted retries.

Deliveries are written with the job's final state, in the same transaction, so
a callback is never forgotten: this loop only sends what is due and records
each attempt. A restart resumes where the last run left off.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
from collections.abc import Callable

import aiohttp
import structlog

from primaa.imaging.urlguard import UnsafeUrl
from primaa.jobs.model import Delivery, DeliveryAttempt, DeliveryStatus
from primaa.jobs.storage import DeliveryStore
from primaa.webhooks.retry import RetryPolicy
from primaa.webhooks.signing import signature_headers

log = structlog.get_logger(__name__)

AttemptListener = Callable[[Delivery, DeliveryAttempt, DeliveryStatus], None]


class WebhookSender:
    """Sends one delivery once: POST JSON, Bearer token, optional signature, no redirects."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        timeout: float,
        signing_key: bytes | None = None,
        check_url: Callable[[str], object] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._session = session
        self._check_url = check_url
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._signing_key = signing_key
        self._clock = clock

    async def send(self, delivery: Delivery) -> DeliveryAttempt:
        body = json.dumps(delivery.payload, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "primaa-webhooks"}
        if delivery.token:
            headers["Authorization"] = f"Bearer {delivery.token}"
        started = self._clock()
        if self._signing_key is not None:
            headers.update(
                signature_headers(self._signing_key, delivery.delivery_id, int(started), body)
            )
        status: int | None = None
        error: str | None = None
        try:
            if self._check_url is not None:
                self._check_url(delivery.url)
            async with self._session.post(
                delivery.url,
                data=body,
                headers=headers,
                timeout=self._timeout,
                allow_redirects=False,
            ) as response:
                status = response.status
                if 300 <= status < 400:
                    # A redirect is an answer, not an instruction: following it would
                    # send the result and the token to a host the client never named.
                    error = f"receiver answered HTTP {status}; redirects are not followed"
                elif not 200 <= status < 300:
                    error = f"receiver answered HTTP {status}"
                await response.read()
        except TimeoutError:
            error = f"timed out after {self._timeout.total:g} s"
        except aiohttp.ClientConnectorError as exc:
            cause = exc.os_error
            if isinstance(cause, UnsafeUrl):
                error = f"refused callback URL: {cause}"
            else:
                error = f"{type(exc).__name__}: {exc}"
        except aiohttp.ClientError as exc:
            error = f"{type(exc).__name__}: {exc}"
        except ValueError as exc:
            error = f"refused callback URL: {exc}"
        except Exception as exc:
            # Anything else is recorded as a failed attempt, so one odd delivery is
            # retried on schedule instead of crashing the loop and being resent at once.
            log.exception("webhook_send_error", delivery_id=delivery.delivery_id)
            error = f"{type(exc).__name__}: {exc}"
        return DeliveryAttempt(
            at=started, status_code=status, error=error, duration=self._clock() - started
        )


class Outbox:
    """The loop that sends due deliveries; :meth:`wake` it when a new one is queued."""

    def __init__(
        self,
        store: DeliveryStore,
        sender: WebhookSender,
        policy: RetryPolicy,
        *,
        concurrency: int = 16,
        poll_interval: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._sender = sender
        self._policy = policy
        self._concurrency = concurrency
        self._poll_interval = poll_interval
        self._clock = clock
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._listeners: list[AttemptListener] = []

    def on_attempt(self, listener: AttemptListener) -> None:
        self._listeners.append(listener)

    def wake(self) -> None:
        self._wakeup.set()

    def stop(self) -> None:
        """Finish the deliveries in flight, start no new ones, and return from :meth:`run`."""
        self._stopping = True
        self._wakeup.set()

    async def run(self) -> None:
        """Keep up to ``concurrency`` deliveries in flight, each on its own task.

        Deliveries do not wait for each other: a receiver that hangs until the
        timeout holds one slot, not the whole batch. Cancelling the loop cancels
        the deliveries in flight; they stay Pending and are sent again after a restart.
        After :meth:`stop`, the loop lets the deliveries in flight finish (each is
        bounded by the sender's timeout) so no attempt is cut off mid-write.
        """
        in_flight: dict[str, asyncio.Task[bool]] = {}
        # Deliveries that finished while a due-query was running: that query may have
        # read them before their attempt was recorded, and must not send them again.
        settled: set[str] = set()

        def done(delivery_id: str, task: asyncio.Task[bool]) -> None:
            in_flight.pop(delivery_id, None)
            settled.add(delivery_id)
            if not task.cancelled() and task.result():
                self._wakeup.set()

        try:
            while not self._stopping:
                self._wakeup.clear()
                free = self._concurrency - len(in_flight)
                if free > 0:
                    settled.clear()
                    due = await self._store.due_deliveries(
                        now=self._clock(), limit=free + len(in_flight)
                    )
                    for delivery in due:
                        busy = delivery.delivery_id in in_flight or delivery.delivery_id in settled
                        if busy or len(in_flight) >= self._concurrency:
                            continue
                        task = asyncio.create_task(self._deliver_logged(delivery))
                        in_flight[delivery.delivery_id] = task
                        task.add_done_callback(functools.partial(done, delivery.delivery_id))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), self._poll_interval)
            if in_flight:
                await asyncio.wait(list(in_flight.values()))
        finally:
            tasks = list(in_flight.values())
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _deliver_logged(self, delivery: Delivery) -> bool:
        """Deliver; ``False`` when the attempt could not be recorded."""
        try:
            await self.deliver(delivery)
        except Exception:
            # The store failed: the delivery stays due and is picked up again at the
            # next poll (not at once, which would spin while the store is down).
            log.exception("webhook_record_failed", delivery_id=delivery.delivery_id)
            return False
        return True

    async def deliver(self, delivery: Delivery) -> DeliveryStatus:
        attempt = await self._sender.send(delivery)
        made = len(delivery.attempts) + 1
        next_at: float | None = None
        if attempt.error is None:
            status = DeliveryStatus.DELIVERED
        else:
            delay = self._policy.next_delay(made, attempt.status_code)
            status = DeliveryStatus.FAILED if delay is None else DeliveryStatus.PENDING
            next_at = None if delay is None else self._clock() + delay
        await asyncio.shield(
            self._store.record_attempt(
                delivery.delivery_id, attempt, status=status, next_attempt_at=next_at
            )
        )
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
        return status
