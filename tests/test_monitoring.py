"""The loop-lag monitor notices a blocked event loop: a warning and a histogram sample."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from structlog.testing import capture_logs

from primaa.app import create_app
from primaa.appkeys import METRICS
from primaa.metrics import Metrics
from primaa.monitoring import LoopLagMonitor
from tests.conftest import make_settings


def _samples_above(metrics: Metrics, seconds: float) -> float:
    """Observations of the lag histogram greater than ``seconds`` (a bucket bound)."""
    registry = metrics.registry
    total = registry.get_sample_value("primaa_event_loop_lag_seconds_count") or 0.0
    within = registry.get_sample_value("primaa_event_loop_lag_seconds_bucket", {"le": str(seconds)})
    return total - (within or 0.0)


async def test_a_blocked_loop_is_logged_and_counted() -> None:
    metrics = Metrics()
    monitor = LoopLagMonitor(metrics.loop_lag, warning_seconds=0.02, interval=0.01)
    with capture_logs() as logs:
        task = asyncio.create_task(monitor.run())
        await asyncio.sleep(0.05)
        time.sleep(0.1)  # noqa: ASYNC251 - blocks the loop on purpose
        await asyncio.sleep(0.05)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    blocked = [entry for entry in logs if entry["event"] == "event_loop_blocked"]
    assert len(blocked) == 1, logs
    assert blocked[0]["log_level"] == "warning"
    assert blocked[0]["lag_ms"] >= 50
    assert _samples_above(metrics, 0.05) == 1


async def test_an_idle_loop_logs_nothing() -> None:
    metrics = Metrics()
    monitor = LoopLagMonitor(metrics.loop_lag, warning_seconds=0.5, interval=0.01)
    with capture_logs() as logs:
        task = asyncio.create_task(monitor.run())
        await asyncio.sleep(0.1)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert not [entry for entry in logs if entry["event"] == "event_loop_blocked"]
    assert (metrics.registry.get_sample_value("primaa_event_loop_lag_seconds_count") or 0) > 0


async def test_the_service_runs_the_monitor(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    """A handler that blocks the loop shows up in the log and in ``/metrics``."""

    async def blocking(_: web.Request) -> web.Response:
        time.sleep(0.1)  # noqa: ASYNC251 - the bug the monitor is there to catch
        return web.Response(text="done")

    app = create_app(make_settings(tmp_path / "data", loop_lag_warning_ms=30))
    app.router.add_get("/block", blocking)
    client = await aiohttp_client(app)
    with capture_logs() as logs:
        await asyncio.sleep(0.1)  # the monitor is sleeping when the handler blocks
        assert (await client.get("/block")).status == 200
        for _ in range(250):  # the monitor records the lag when its sleep ends
            if _samples_above(app[METRICS], 0.05) >= 1:
                break
            await asyncio.sleep(0.02)
    assert [entry for entry in logs if entry["event"] == "event_loop_blocked"], logs
    text = await (await client.get("/metrics")).text()
    assert 'primaa_event_loop_lag_seconds_bucket{le="0.1"}' in text
    assert _samples_above(app[METRICS], 0.05) >= 1
