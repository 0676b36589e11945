"""Sends one callback once: the HTTP side of the outbox, with its time limit."""

from __future__ import annotations

import time
from collections.abc import Callable

import aiohttp
import structlog

from primaa.fastjson import dumps
from primaa.imaging.urlguard import UnsafeUrl
from primaa.jobs.model import Delivery, DeliveryAttempt
from primaa.webhooks.signing import signature_headers

log = structlog.get_logger(__name__)


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
        # On the event loop: orjson writes a callback of 1 MiB (callback_max_result_bytes)
        # in about a millisecond, json in tens.
        body = dumps(delivery.payload)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "primaa-webhooks",
            # Signed or not: a receiver de-duplicates on it (a replica that died before it
            # recorded an answer has its callback sent again by another, as the same message).
            "webhook-id": delivery.delivery_id,
        }
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
