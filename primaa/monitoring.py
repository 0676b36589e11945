"""Event-loop lag: how late the loop wakes a task that asked to sleep.

Everything in the service (HTTP, dispatch, callbacks) shares one event loop, so
any blocking call delays all of it. The lag of a periodic sleep is a direct,
cheap measure of that delay; a warning names when it happened.
"""

from __future__ import annotations

import asyncio

import structlog
from prometheus_client import Histogram

log = structlog.get_logger(__name__)


class LoopLagMonitor:
    """Sleeps ``interval`` seconds in a loop and records how late each wake-up was."""

    def __init__(
        self, histogram: Histogram, *, warning_seconds: float, interval: float = 0.05
    ) -> None:
        self._histogram = histogram
        self._warning_seconds = warning_seconds
        self._interval = interval

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(self._interval)
            lag = max(0.0, loop.time() - started - self._interval)
            self._histogram.observe(lag)
            if lag > self._warning_seconds:
                log.warning("event_loop_blocked", lag_ms=round(lag * 1000, 1))
