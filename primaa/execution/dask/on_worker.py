"""What runs inside a Dask worker: primaa's worker plugin and the task function.

The service registers :class:`PrimaaWorkerPlugin` with the scheduler, which sets it
up on every worker there is and on every worker that joins later (a restarted one
too): it builds the plugin registry once per worker process, from the service's
own ``plugins`` and ``disabled_plugins``. The workers need primaa and the plugin
packages installed, and nothing else from the service.

A task reads its image itself, from the path it is given: a slide (a tile of
it) on shared storage, or the service's spooled copy of a flat image, which is
why the spool must be on storage shared with the workers (``docs/deploy.md``).

Like :mod:`primaa.execution.worker`, this module imports no web server, database
or jobs core: only ``distributed``, ``plugins``, ``imaging`` and the worker module.
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import dataclasses
import os
import time

import structlog
from distributed import Worker, WorkerPlugin, get_worker

from primaa.execution.worker import (
    PROGRESS_INTERVAL,
    WorkRequest,
    one_library_thread,
    run_algorithm,
)
from primaa.imaging.slides import SlideCache
from primaa.logging import configure_logging
from primaa.plugins.algorithm import AlgorithmResult, JobCancelled
from primaa.plugins.registry import AlgorithmRegistry, load_registry

#: glibc's own ceilings for its adaptive malloc thresholds on 64-bit, which a local pool
#: worker reaches by itself after its first tile: blocks up to 32 MB (a tile's arrays)
#: come from the heap, and the heap's top is given back past 64 MB.
MMAP_THRESHOLD = 32 * 1024 * 1024
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: The name the plugin is registered under: a second registration replaces the first.
PLUGIN_NAME = "primaa"
#: Run keys of cancelled tasks a worker remembers (a cancelled task that never started
#: leaves its key behind; the oldest are forgotten first).
MAX_CANCELLED = 10_000


class WorkerNotReady(RuntimeError):
    """The task landed on a worker where primaa's plugin was never set up."""


class AlgorithmEnded(Exception):
    """The algorithm raised ``SystemExit`` or ``KeyboardInterrupt``: the task fails instead
    of the exception ending the worker's thread (or, re-raised, the service)."""


@dataclasses.dataclass(slots=True)
class _WorkerState:
    registry: AlgorithmRegistry
    slides: SlideCache = dataclasses.field(default_factory=SlideCache)


_state: _WorkerState | None = None
#: Run keys the service cancelled; a task checks its own at each progress report.
_cancelled: collections.OrderedDict[str, None] = collections.OrderedDict()


class PrimaaWorkerPlugin(WorkerPlugin):
    """Loads primaa's plugins into a worker process once, with the service's settings."""

    name = PLUGIN_NAME

    def __init__(
        self,
        *,
        disabled_plugins: tuple[str, ...],
        plugin_modules: tuple[str, ...],
        log_format: str,
        log_level: str,
    ) -> None:
        self.disabled_plugins = disabled_plugins
        self.plugin_modules = plugin_modules
        self.log_format = log_format
        self.log_level = log_level

    def setup(self, worker: Worker) -> None:
        global _state
        configure_logging(self.log_format, self.log_level)
        registry = load_registry(disabled=self.disabled_plugins, modules=self.plugin_modules)
        one_library_thread()
        malloc = "adaptive thresholds restored" if undo_malloc_trim_threshold() else "as it was"
        _state = _WorkerState(registry=registry)
        structlog.get_logger(__name__).info(
            "dask_worker_ready",
            worker=worker.address,
            pid=os.getpid(),
            algorithms=registry.names(),
            malloc=malloc,
        )


def undo_malloc_trim_threshold() -> bool:
    """Give glibc's malloc back the thresholds a local pool worker ends up with.

    Dask's nanny starts its worker with ``MALLOC_TRIM_THRESHOLD_=65536`` (its
    ``distributed.nanny.pre-spawn-environ``), which also turns off glibc's adaptive mmap
    threshold: every array of 128 kB or more is then mapped afresh and its pages faulted
    in again, for each of the detector's temporaries on each tile: 3 x the page faults
    and 1.2 x the CPU time on the same tiles, which made a slide on 2 Dask workers
    1.1-1.6 x slower than on the local pool (``bench.dask_executor --slide``).
    ``False`` when the variable is unset or the C library is not glibc.
    """
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )


def mark_cancelled(run_key: str) -> None:
    """Run on every worker by the service (``Client.run``): stop the task at its next report."""
    _cancelled[run_key] = None
    while len(_cancelled) > MAX_CANCELLED:
        _cancelled.popitem(last=False)


def worker_algorithms() -> list[str]:
    """The algorithms this worker's registry holds (for the service's start-up check)."""
    return [] if _state is None else _state.registry.names()


class DaskProgress:
    """Sends throttled progress to the service as worker events, and notices cancellation."""

    def __init__(self, request: WorkRequest, run_key: str, topic: str, worker: Worker) -> None:
        self._task_id = request.key
        self._run_key = run_key
        self._topic = topic
        self._worker = worker
        self._last_sent = 0.0

    def __call__(self, fraction: float) -> None:
        if self._run_key in _cancelled:
            _cancelled.pop(self._run_key, None)
            raise JobCancelled(self._task_id)
        now = time.monotonic()
        if now - self._last_sent >= PROGRESS_INTERVAL:
            self._last_sent = now
            self._worker.log_event(self._topic, ["progress", self._task_id, float(fraction)])


def run_task(request: WorkRequest, run_key: str, topic: str) -> AlgorithmResult:
    """The Dask task: announce it (for a kill after a cancel's grace), then run the algorithm.

    A ``MemoryError`` comes back as a plain one (numpy's subclass needs numpy to
    unpickle), which the service reports as the task running out of memory.
    """
    state = _state
    if state is None:
        raise WorkerNotReady(
            "primaa's worker plugin is not set up on this Dask worker (is primaa installed there?)"
        )
    worker = get_worker()
    if not os.path.exists(request.image_path):
        raise FileNotFoundError(f"no file {request.image_path} on the worker {worker.address}")
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(job_id=request.job_id, request_id=request.request_id)
    worker.log_event(topic, ["started", run_key, worker.address])
    try:
        progress = DaskProgress(request, run_key, topic, worker)
        return run_algorithm(state.registry, request, progress, state.slides)
    except MemoryError as exc:
        raise MemoryError(str(exc)) from None
    except (SystemExit, KeyboardInterrupt) as exc:
        raise AlgorithmEnded(
            f"the algorithm tried to end its process ({type(exc).__name__}: {exc})"
        ) from None
    finally:
        worker.log_event(topic, ["ended", run_key, worker.address])
