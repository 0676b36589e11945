"""What the jobs core needs from the outside, as protocols; backends are chosen in app.py.

The store's port lives beside this one in :mod:`primaa.jobs.storage`. Backends
(``primaa.execution``, ``primaa.imaging.fetch``, ``primaa.webhooks``,
``primaa.metrics``) import these protocols and the errors below; the jobs core
imports none of them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from primaa.plugins.algorithm import AlgorithmResult


class TaskError(Exception):
    """A task failed for a reason its message states in words safe to show a client
    (the image could not be fetched or decoded, the algorithm ran out of memory or time)."""


class ImageUnavailable(TaskError):
    """The image could not be fetched, stored or decoded."""


class ImageDeferred(ImageUnavailable):
    """The image could not be stored for a reason of the service's own (its spool's disk
    is full), not the image's: the same fetch is worth trying again in a while."""


class OutOfMemory(TaskError):
    """The algorithm hit the worker's memory limit (a ``MemoryError`` in the worker)."""

    def __init__(self, limit_mb: int) -> None:
        limit = f" (worker limit {limit_mb} MB)" if limit_mb else ""
        super().__init__(f"the algorithm ran out of memory{limit}")


class WorkerLost(Exception):
    """A worker process died and nobody can tell which job killed it; retry, counted."""


class WorkerCrashed(WorkerLost):
    """This job's own worker died (segfault, ``os._exit``, SIGKILL): fail it, do not retry.

    Retrying an algorithm that crashes its process would only crash the pool again,
    and take the jobs running beside it down each time.
    """


class JobInterrupted(WorkerLost):
    """Another job's worker died and took this one's pool down: re-run it, uncounted."""


@dataclasses.dataclass(frozen=True, slots=True)
class Task:
    """One algorithm run on one image, or on one region of a slide: what an executor runs.

    Small and picklable: the image travels as a reference (a file the worker can
    open), never as pixels. A job is one task, or many (the tiles of a slide),
    each with its own ``task_id``: progress, cancel and crash blame are per task.
    """

    job_id: str
    algorithm: str
    image_path: Path
    parameters: Mapping[str, Any]
    #: Where in the image to run, as the worker reads it (a slide tile); ``None``: all of it.
    region: object | None = None
    #: Unique among running tasks; the job's id when the job is one task.
    task_id: str = ""
    #: The pixels of a flat image, as its description says (``None``: a slide, or not
    #: known): an executor may decode a tiny one without a hand-off to a thread.
    pixels: int | None = None

    def __post_init__(self) -> None:
        if not self.task_id:
            object.__setattr__(self, "task_id", self.job_id)


#: Where executors report progress: ``(task_id, fraction)``, the fraction from 0 to 1.
ProgressSink = Callable[[str, float], None]


class Executor(Protocol):
    """Runs tasks away from the dispatcher: CPU-bound ones in worker processes,
    I/O-bound ones on the event loop.

    ``run`` raises :class:`WorkerCrashed`, :class:`JobInterrupted` or
    :class:`WorkerLost` when a worker dies, a :class:`TaskError` for a failure
    the client may read, and ``JobCancelled`` when the job was stopped by
    :meth:`cancel`; any other exception is the algorithm's own bug.
    """

    async def run(self, task: Task) -> AlgorithmResult: ...

    def cancel(self, task_id: str) -> None:
        """Stop the task: at its next progress report, or by killing its worker after a grace."""

    def forget(self, task_id: str) -> None:
        """Drop any cancellation left from an earlier run of the task."""

    def on_progress(self, sink: ProgressSink) -> None: ...


class ImageSource(Protocol):
    """Where images come from (http(s) into the spool, ``file://`` in place), and what they are."""

    async def check(self, url: str) -> None:
        """At submission: raise ``ValueError`` naming why ``url`` can never be read."""

    async def fetch(self, url: str, job_id: str) -> Path:
        """The image as a local file (fetched, or read in place); raise
        :class:`ImageUnavailable` naming the cause."""

    async def describe(self, path: Path) -> Mapping[str, Any]:
        """Open the image and say what it is, as a JSON object (``width``, ``height``,
        ``mpp``, ``levels``, ``format``...); raise :class:`ImageUnavailable` when it
        cannot be used (damaged, unknown format, over a limit)."""

    async def in_place(self, url: str) -> Path | None:
        """The file of an image read where it is (``file://``, still under its root);
        ``None`` for one that is fetched into the spool, or no longer allowed."""


class Notifier(Protocol):
    def wake(self) -> None:
        """A delivery was queued: send it soon."""


class JobMetrics(Protocol):
    def job_finished(self, algorithm: str, status: str, seconds: float | None) -> None:
        """Count a job that reached a final state here; ``seconds`` it ran, when it ran."""
