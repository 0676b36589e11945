"""Runs I/O-bound algorithms (``AsyncAlgorithm``) as tasks on the event loop.

They wait on the network (a remote inference server, say), so a worker process
would sit idle; only the image is decoded in a thread (on the loop when it is
tiny: the hand-off would cost more than the decoding). Same seam as the process
pool: progress goes to the sinks, and a cancelled job stops at its next report.
"""

from __future__ import annotations

import asyncio
from typing import Final

from primaa.imaging.decode import ImageDecodeError, decode_image
from primaa.jobs.ports import ImageUnavailable, ProgressSink, Task
from primaa.plugins.algorithm import AlgorithmResult, AsyncAlgorithm, JobCancelled
from primaa.plugins.registry import AlgorithmRegistry

#: A flat image of at most this many pixels (its description says) is decoded on the loop.
INLINE_DECODE_PIXELS: Final = 256 * 256


class LoopExecutor:
    def __init__(self, registry: AlgorithmRegistry, *, max_pixels: int) -> None:
        self._registry = registry
        self._max_pixels = max_pixels
        self._cancelled: set[str] = set()
        self._sinks: list[ProgressSink] = []

    def on_progress(self, sink: ProgressSink) -> None:
        self._sinks.append(sink)

    def cancel(self, task_id: str) -> None:
        self._cancelled.add(task_id)

    def forget(self, task_id: str) -> None:
        self._cancelled.discard(task_id)

    async def run(self, task: Task) -> AlgorithmResult:
        algorithm = self._registry.get(task.algorithm)
        if not isinstance(algorithm, AsyncAlgorithm):
            raise LookupError(f"{task.algorithm!r} is not an algorithm that runs on the event loop")
        try:
            if task.pixels is not None and task.pixels <= INLINE_DECODE_PIXELS:
                image = decode_image(task.image_path, max_pixels=self._max_pixels)
            else:
                image = await asyncio.to_thread(
                    decode_image, task.image_path, max_pixels=self._max_pixels
                )
        except ImageDecodeError as exc:
            raise ImageUnavailable(str(exc)) from None

        def progress(fraction: float) -> None:
            if task.task_id in self._cancelled:
                raise JobCancelled(task.job_id)
            for sink in self._sinks:
                sink(task.task_id, fraction)

        try:
            return await algorithm.run(image, task.parameters, progress)
        finally:
            self._cancelled.discard(task.task_id)
