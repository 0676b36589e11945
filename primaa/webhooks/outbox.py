"""Delivers callbacks from the store's outbox, with persisted retries.

Deliveries are written with the job's final state, in the same transaction, so
a callback is never forgotten: this loop only sends what is due and records
each attempt. A restart resumes where the last run left off.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable

import aiohttp
import structlog

from primaa.jobs.model import Delivery, DeliveryAttempt, DeliveryStatus
from primaa.store.protocol import JobStore
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
                await response.read()
                if not 200 <= status < 300:
                    error = f"receiver answered HTTP {status}"
        except TimeoutError:
            error = f"timed out after {self._timeout.total:g} s"
        except aiohttp.ClientError as exc:
            error = f"{type(exc).__name__}: {exc}"
        except ValueError as exc:
            error = f"refused callback URL: {exc}"
        return DeliveryAttempt(
            at=started, status_code=status, error=error, duration=self._clock() - started
        )


class Outbox:
    """The loop that sends due deliveries; :meth:`wake` it when a new one is queued."""

    def __init__(
        self,
        store: JobStore,
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
        self._listeners: list[AttemptListener] = []

    def on_attempt(self, listener: AttemptListener) -> None:
        self._listeners.append(listener)

    def wake(self) -> None:
        self._wakeup.set()

    async def run(self) -> None:
        while True:
            self._wakeup.clear()
            due = await self._store.due_deliveries(now=self._clock(), limit=self._concurrency)
            if due:
                await asyncio.gather(*(self.deliver(d) for d in due))
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), self._poll_interval)

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
