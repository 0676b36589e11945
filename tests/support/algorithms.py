"""Algorithms for exercising the service: slow with progress, crashing, failing, async.

Loaded into the service and its workers with the ``plugins`` setting
(``tests.support.algorithms``), exactly as an operator loads a module plugin.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from typing import Any

from marshmallow import Schema, fields

from primaa import Algorithm, AlgorithmResult, AsyncAlgorithm, Progress, RGBImage, hookimpl


class SleepParameters(Schema):
    seconds = fields.Float(load_default=0.5)
    steps = fields.Integer(load_default=10)


def _shape_result(image: RGBImage, **extra: float) -> AlgorithmResult:
    height, width = image.shape[:2]
    return AlgorithmResult(
        geometry={"type": "MultiPoint", "coordinates": [[width - 1.0, height - 1.0]]},
        measurements={"width": float(width), "height": float(height), **extra},
    )


class Sleep(Algorithm):
    """Sleeps in steps, reporting progress after each (and so noticing cancellation)."""

    name = "test_sleep"
    version = "1"
    summary = "Sleep, reporting progress"
    Parameters = SleepParameters

    def run(
        self, image: RGBImage, parameters: Mapping[str, Any], progress: Progress
    ) -> AlgorithmResult:
        steps = parameters["steps"]
        for step in range(steps):
            time.sleep(parameters["seconds"] / steps)
            progress((step + 1) / steps)
        return _shape_result(image, pid=float(os.getpid()))


class Crash(Algorithm):
    """Kills its own worker process, as a segfault or the OOM killer would."""

    name = "test_crash"
    version = "1"
    summary = "Exit the worker process abruptly"

    def run(
        self, image: RGBImage, parameters: Mapping[str, Any], progress: Progress
    ) -> AlgorithmResult:
        os._exit(3)


class Fail(Algorithm):
    name = "test_fail"
    version = "1"
    summary = "Raise an exception"

    def run(
        self, image: RGBImage, parameters: Mapping[str, Any], progress: Progress
    ) -> AlgorithmResult:
        raise ValueError("boom")


class AsyncSleep(AsyncAlgorithm):
    """An I/O-bound algorithm: runs on the event loop."""

    name = "test_async"
    version = "1"
    summary = "Await, then report the image size"
    Parameters = SleepParameters

    async def run(
        self, image: RGBImage, parameters: Mapping[str, Any], progress: Progress
    ) -> AlgorithmResult:
        steps = parameters["steps"]
        for step in range(steps):
            await asyncio.sleep(parameters["seconds"] / steps)
            progress((step + 1) / steps)
        return _shape_result(image, pid=float(os.getpid()))


@hookimpl
def primaa_algorithms() -> list[Algorithm | AsyncAlgorithm]:
    return [Sleep(), Crash(), Fail(), AsyncSleep()]
