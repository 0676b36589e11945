"""Algorithms for exercising the service: slow with progress, crashing, exiting, failing,
async, spinning without progress reports, and eating memory.

Loaded into the service and its workers with the ``plugins`` setting
(``tests.support.algorithms``), exactly as an operator loads a module plugin.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import resource
import signal
import sys
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from marshmallow import Schema, fields

from primaa import Algorithm, AlgorithmResult, AsyncAlgorithm, Progress, RGBImage, hookimpl
from primaa.execution.worker import PROGRESS_INTERVAL


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


class CrashParameters(Schema):
    seconds = fields.Float(load_default=0.0)


class Crash(Algorithm):
    """Kills its own worker process, as a segfault or the OOM killer would.

    ``seconds`` delays the exit, so a test can have it land in the middle of another
    task on the other worker rather than in the gap between two.
    """

    name = "test_crash"
    version = "1"
    summary = "Exit the worker process abruptly"
    Parameters = CrashParameters

    def run(
        self, image: RGBImage, parameters: Mapping[str, Any], progress: Progress
    ) -> AlgorithmResult:
        time.sleep(parameters["seconds"])
        os._exit(3)


class Segfault(Algorithm):
    """Dereferences NULL in C: a real SIGSEGV, as a buggy extension would."""

    name = "test_segfault"
    version = "1"
    summary = "Crash the worker with a segmentation fault"

    def run(
        self, image: RGBImage, parameters: Mapping[str, Any], progress: Progress
    ) -> AlgorithmResult:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        ctypes.string_at(0)
        raise AssertionError("survived a segfault")


class SigKill(Algorithm):
    """Sends itself SIGKILL, as the out-of-memory killer would."""

    name = "test_sigkill"
    version = "1"
    summary = "Kill the worker with SIGKILL"

    def run(
        self, image: RGBImage, parameters: Mapping[str, Any], progress: Progress
    ) -> AlgorithmResult:
        os.kill(os.getpid(), signal.SIGKILL)
        raise AssertionError("survived SIGKILL")


class SpinParameters(Schema):
    seconds = fields.Float(load_default=60.0)


class Spin(Algorithm):
    """Busy for a while, never noticing a cancellation, like a long call into C.

    It reports progress once on entry, only so that tests can see it is in its worker.
    """

    name = "test_spin"
    version = "1"
    summary = "Busy loop without progress reports"
    Parameters = SpinParameters

    def run(
        self, image: RGBImage, parameters: Mapping[str, Any], progress: Progress
    ) -> AlgorithmResult:
        time.sleep(PROGRESS_INTERVAL)  # so the report is not throttled away
        progress(0.01)
        deadline = time.monotonic() + parameters["seconds"]
        while time.monotonic() < deadline:
            pass
        return _shape_result(image, pid=float(os.getpid()))


class HogParameters(Schema):
    megabytes = fields.Integer(load_default=2048)
    #: Write to every page, so the memory is resident (a process monitor sees it).
    touch = fields.Boolean(load_default=False)


class Hog(Algorithm):
    """Allocates a large array, as an algorithm given a huge image would."""

    name = "test_hog"
    version = "1"
    summary = "Allocate a lot of memory"
    Parameters = HogParameters

    def run(
        self, image: RGBImage, parameters: Mapping[str, Any], progress: Progress
    ) -> AlgorithmResult:
        block = np.zeros(parameters["megabytes"] * 2**20, dtype=np.uint8)
        if parameters["touch"]:
            block.fill(1)
        return _shape_result(image, allocated=float(block.nbytes))


class Exit(Algorithm):
    """Calls ``sys.exit``, as code written for a command line does."""

    name = "test_exit"
    version = "1"
    summary = "Call sys.exit"

    def run(
        self, image: RGBImage, parameters: Mapping[str, Any], progress: Progress
    ) -> AlgorithmResult:
        sys.exit(3)


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
    return [Sleep(), Crash(), Segfault(), SigKill(), Spin(), Hog(), Exit(), Fail(), AsyncSleep()]
