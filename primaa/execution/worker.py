"""What runs inside a worker process.

Only module-level, picklable functions live here, and only ``plugins`` and
``imaging`` are imported: no aiohttp, no store. The registry is built once per
process by :func:`initialize`, the pool's initializer.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from multiprocessing.queues import Queue

from primaa.imaging.decode import decode_image
from primaa.logging import configure_logging
from primaa.plugins.algorithm import Algorithm, AlgorithmResult, JobCancelled
from primaa.plugins.registry import AlgorithmRegistry, load_registry

#: Messages from workers to the service: ("started", job_id, pid) and ("progress", job_id, pct);
#: ``None`` tells the reader thread to stop.
WorkerEvent = tuple[str, str, float]
if TYPE_CHECKING:
    EventQueue = Queue[WorkerEvent | None]

#: Least time between two progress messages of one job.
PROGRESS_INTERVAL = 0.2

_registry: AlgorithmRegistry | None = None
_events: EventQueue | None = None
_cancel_dir: Path | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class WorkRequest:
    """Everything a worker needs for one job; small, so it pickles cheaply."""

    job_id: str
    algorithm: str
    image_path: str
    parameters: Mapping[str, Any]
    max_pixels: int
    request_id: str | None = None


def initialize(
    events: EventQueue,
    cancel_dir: str,
    disabled_plugins: tuple[str, ...],
    plugin_modules: tuple[str, ...],
    log_format: str,
    log_level: str,
) -> None:
    """Pool initializer: load the plugins once for the life of the process."""
    global _registry, _events, _cancel_dir
    configure_logging(log_format, log_level)
    _events = events
    _cancel_dir = Path(cancel_dir)
    _registry = load_registry(disabled=disabled_plugins, modules=plugin_modules)


def cancel_flag(cancel_dir: Path, job_id: str) -> Path:
    """The file whose existence tells a worker to stop ``job_id``; it survives restarts."""
    return cancel_dir / job_id


class WorkerProgress:
    """Sends throttled progress to the service and notices cancellation."""

    def __init__(self, job_id: str, events: EventQueue | None, flag: Path) -> None:
        self._job_id = job_id
        self._events = events
        self._flag = flag
        self._last_sent = 0.0

    def __call__(self, fraction: float) -> None:
        if self._flag.exists():
            self._flag.unlink(missing_ok=True)
            raise JobCancelled(self._job_id)
        now = time.monotonic()
        if self._events is not None and now - self._last_sent >= PROGRESS_INTERVAL:
            self._last_sent = now
            pct = round(min(max(fraction, 0.0), 1.0) * 100.0, 1)
            self._events.put(("progress", self._job_id, pct))


def run_job(request: WorkRequest) -> AlgorithmResult:
    """Decode the spooled image and run the algorithm on it."""
    if _registry is None or _cancel_dir is None:
        raise RuntimeError("worker process was not initialised")
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(job_id=request.job_id, request_id=request.request_id)
    if _events is not None:
        _events.put(("started", request.job_id, float(os.getpid())))
    algorithm = _registry.get(request.algorithm)
    if not isinstance(algorithm, Algorithm):
        raise LookupError(f"algorithm {request.algorithm!r} is not available in the worker")
    progress = WorkerProgress(request.job_id, _events, cancel_flag(_cancel_dir, request.job_id))
    progress(0.0)
    image = decode_image(Path(request.image_path), max_pixels=request.max_pixels)
    return algorithm.run(image, request.parameters, progress)
