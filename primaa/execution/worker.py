"""What runs inside a worker process.

Only module-level, picklable functions live here, and only ``plugins``, ``imaging`` and
the standard-library-only ``lifeline`` are imported: no aiohttp, no store. The registry
is built once per process by :func:`initialize`, the pool's initializer.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import signal
import time
import urllib.parse
from collections.abc import Mapping
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import cv2
import structlog

from primaa.execution.lifeline import watch as watch_service
from primaa.imaging.decode import decode_image
from primaa.imaging.slides import SlideCache, Tile
from primaa.logging import configure_logging
from primaa.plugins.algorithm import Algorithm, AlgorithmResult, JobCancelled, Progress
from primaa.plugins.registry import AlgorithmRegistry, load_registry

#: Messages from workers to the service: ("started", task_id, pid) and
#: ("progress", task_id, fraction from 0 to 1);
#: the service itself sends ("sync", token, 0) and ``None`` (stop) to its reader thread.
WorkerEvent = tuple[str, str, float]

#: The write end of the events pipe, shared by every worker. Not a ``multiprocessing.Queue``:
#: its feeder thread loses a "started" sent just before the process dies, and its write lock
#: stays taken forever if a worker is killed holding it. A pickled event is well under
#: PIPE_BUF (4 KiB), so each ``send`` is one atomic write(2) and needs no lock.
EventSender = Connection

#: Least time between two progress messages of one job.
PROGRESS_INTERVAL = 0.2

_registry: AlgorithmRegistry | None = None
_events: EventSender | None = None
_cancel_dir: Path | None = None
#: The slides this worker read tiles from lately, kept open for the next tiles.
_slides = SlideCache()


@dataclasses.dataclass(frozen=True, slots=True)
class WorkRequest:
    """Everything a worker needs for one task; small, so it pickles cheaply."""

    job_id: str
    algorithm: str
    image_path: str
    parameters: Mapping[str, Any]
    max_pixels: int
    request_id: str | None = None
    #: The events and the cancellation flag are the task's; the job's id is for the logs.
    task_id: str = ""
    #: A tile of a slide to read instead of decoding the whole image.
    region: Tile | None = None

    @property
    def key(self) -> str:
        return self.task_id or self.job_id


def initialize(
    events: EventSender,
    cancel_dir: str,
    disabled_plugins: tuple[str, ...],
    plugin_modules: tuple[str, ...],
    log_format: str,
    log_level: str,
    memory_limit_mb: int = 0,
    *,
    lifeline: Connection | None = None,
    death_signal: bool = False,
) -> None:
    """Pool initializer: load the plugins once for the life of the process, then cap its memory.

    First the worker ties its life to the service's (:mod:`primaa.execution.lifeline`) and
    leaves SIGINT to it: a Ctrl-C in a terminal reaches the whole process group, and the
    service answers it by draining, which needs its workers to finish their jobs.
    """
    global _registry, _events, _cancel_dir
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Blocked by the service while it started this process (see ``ProcessPoolRunner``).
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    if lifeline is not None:
        watch_service(lifeline, death_signal=death_signal)
    configure_logging(log_format, log_level)
    _events = events
    _cancel_dir = Path(cancel_dir)
    _registry = load_registry(disabled=disabled_plugins, modules=plugin_modules)
    one_library_thread()
    if memory_limit_mb:
        limit_address_space(memory_limit_mb)


def one_library_thread() -> None:
    """One OpenCV thread per worker (process, or Dask worker thread).

    There is one worker per CPU, and a slide's tiles keep them all busy: OpenCV's own
    threads on top (its default is a thread per CPU) only fight them for the cores.
    """
    cv2.setNumThreads(1)


def limit_address_space(limit_mb: int) -> None:
    """Cap the worker's address space so a runaway algorithm gets a ``MemoryError``.

    RLIMIT_AS counts virtual memory, not resident memory: the libraries' mappings
    (numpy/OpenBLAS and OpenCV thread buffers, scipy) count in full although little of
    them is touched. It is set after the plugins are loaded so that a limit too low
    fails the jobs with a clear message instead of failing every worker start (which
    would rebuild the pool forever).
    """
    limit = limit_mb * 1024 * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    mapped = _mapped_mb()
    if mapped is not None and mapped > limit_mb * 0.8:
        structlog.get_logger(__name__).warning(
            "worker_memory_limit_low", limit_mb=limit_mb, idle_mapped_mb=mapped
        )


def _mapped_mb() -> int | None:
    """The process's virtual size (VmSize) in MB, where /proc tells it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return None


def cancel_flag(cancel_dir: Path, task_id: str) -> Path:
    """The file whose existence tells a worker to stop ``task_id``; it survives restarts.

    A tile's task id holds a slash (``"{job_id}/{n}"``): it is escaped into one name.
    """
    return cancel_dir / urllib.parse.quote(task_id, safe="")


class WorkerProgress:
    """Sends throttled progress to the service and notices cancellation."""

    def __init__(self, job_id: str, events: EventSender | None, flag: Path) -> None:
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
            self._events.send(("progress", self._job_id, fraction))


def run_job(request: WorkRequest) -> AlgorithmResult:
    """Decode the spooled image and run the algorithm on it.

    A ``MemoryError`` (numpy raises a subclass that needs numpy to unpickle) comes
    back as a plain one, which the pool reports as the job running out of memory.
    """
    try:
        return _run_job(request)
    except MemoryError as exc:
        raise MemoryError(str(exc)) from None


def _run_job(request: WorkRequest) -> AlgorithmResult:
    if _registry is None or _cancel_dir is None:
        raise RuntimeError("worker process was not initialised")
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(job_id=request.job_id, request_id=request.request_id)
    if _events is not None:
        _events.send(("started", request.key, float(os.getpid())))
    progress = WorkerProgress(request.key, _events, cancel_flag(_cancel_dir, request.key))
    return run_algorithm(_registry, request, progress, _slides)


def run_algorithm(
    registry: AlgorithmRegistry, request: WorkRequest, progress: Progress, slides: SlideCache
) -> AlgorithmResult:
    """Read the task's image (its slide tile, or the whole decoded file) and run the algorithm:
    what every kind of worker does once it has its registry and its progress callback."""
    algorithm = registry.get(request.algorithm)
    if not isinstance(algorithm, Algorithm):
        raise LookupError(f"algorithm {request.algorithm!r} is not available in the worker")
    progress(0.0)
    if request.region is not None:
        image = request.region.read(slides.get(request.image_path))
    else:
        image = decode_image(Path(request.image_path), max_pixels=request.max_pixels)
    return algorithm.run(image, request.parameters, progress)
