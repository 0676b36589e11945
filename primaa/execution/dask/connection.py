"""The service's connection to the Dask scheduler, kept set up across scheduler restarts.

A connection is usable when it is up *and* set up: subscribed to this service's
topic of worker events and with primaa's worker plugin registered. A scheduler
that restarted knows neither, so both are done again on every new connection.
``distributed``'s client reconnects by itself for ``timeout`` seconds and then
closes for good; a closed client is replaced here. Meanwhile tasks wait in
:meth:`SchedulerConnection.ready` (their jobs stay Running, their time limits run).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import structlog
from distributed import Client

from primaa.execution.dask.on_worker import PLUGIN_NAME, PrimaaWorkerPlugin

log = structlog.get_logger(__name__)

#: Seconds between attempts to reach a scheduler that went away: first, and at most.
RECONNECT_FIRST_DELAY = 0.5
RECONNECT_MAX_DELAY = 5.0


class DaskUnavailable(Exception):
    """The scheduler cannot be reached; the message names its address."""


class SchedulerConnection:
    def __init__(
        self,
        address: str,
        *,
        plugin: PrimaaWorkerPlugin,
        on_event: Callable[[tuple[float, Any]], None],
        timeout: float = 10.0,
    ) -> None:
        self.address = address
        self._plugin = plugin
        self._on_event = on_event
        self._timeout = timeout
        self._client: Client | None = None
        self._lock = asyncio.Lock()
        #: The worker events' topic: this client's own (its id survives reconnections).
        self.topic = ""
        #: The scheduler comm the topic and the plugin were set up on.
        self._set_up_on: object = None

    async def open(self) -> None:
        """Connect and set up; :class:`DaskUnavailable` if the scheduler does not answer."""
        try:
            client = await Client(
                self.address,
                asynchronous=True,
                timeout=self._timeout,
                set_as_default=False,
                name="primaa",
            )
        except (OSError, TimeoutError, ValueError) as exc:
            raise DaskUnavailable(
                f"cannot reach the Dask scheduler at {self.address!r}: {exc}"
            ) from None
        self._client, self.topic = client, f"primaa-{client.id}"
        await self._set_up(client)

    async def _set_up(self, client: Client) -> None:
        comm = client.scheduler_comm
        client.subscribe_topic(self.topic, self._on_event)
        await client.register_plugin(self._plugin, name=PLUGIN_NAME)
        self._set_up_on = comm

    @property
    def client(self) -> Client:
        if self._client is None:
            raise RuntimeError("the Dask executor is not started")
        return self._client

    def usable(self) -> Client | None:
        """The client if it is connected and set up on that connection, else ``None``."""
        client = self._client
        if client is None or client.status != "running":
            return None
        return client if client.scheduler_comm is self._set_up_on else None

    async def ready(self) -> Client:
        """The client, connected and set up: waits for as long as the scheduler is away."""
        delay = RECONNECT_FIRST_DELAY
        while True:
            client = self.client
            if client.status in {"running", "closing", "closed"}:
                async with self._lock:
                    try:
                        await self._repair(client)
                    except (DaskUnavailable, OSError, TimeoutError) as exc:
                        log.warning("dask_scheduler_unreachable", error=str(exc))
            usable = self.usable()
            if usable is not None:
                return usable
            await asyncio.sleep(delay)
            delay = min(2 * delay, RECONNECT_MAX_DELAY)

    async def _repair(self, client: Client) -> None:
        """Set up a client that reconnected, or replace one that gave up (once, under the lock)."""
        if self._client is not client or self.usable() is not None:
            return
        if client.status == "running":
            await self._set_up(client)
        else:
            await self.open()
        log.info("dask_scheduler_reconnected", scheduler=self.address)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()
