"""The jobs this process is running, and the one place that holds each one's state.

A running job's stage, its cancel request, the executor it went to and its
progress live on its :class:`RunningJob`; the dispatcher, the runner and the
client-facing manager all read and change them here.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from typing import Literal

from primaa.jobs.model import Job
from primaa.jobs.ports import Executor

#: ``starting`` → ``fetching`` (its image) → ``waiting`` (for a slot) → ``running``.
Stage = Literal["starting", "fetching", "waiting", "running"]


def percent(fraction: float) -> float:
    """An algorithm's reported fraction as the 0-100 progress clients read, clamped, to 0.1."""
    return round(min(max(fraction, 0.0), 1.0) * 100.0, 1)


@dataclasses.dataclass(slots=True, eq=False)
class RunningJob:
    """A job this process has claimed, from its claim until its final write."""

    job: Job
    task: asyncio.Task[None] | None = None
    stage: Stage = "starting"
    cancel_requested: bool = False
    #: The service is stopping and hands the job back as Pending, cancel request or not.
    releasing: bool = False
    #: The executor running it, once the algorithm is known.
    executor: Executor | None = None
    progress_percent: float = 0.0
    #: Progress not yet written to the store.
    progress_dirty: bool = False

    @property
    def job_id(self) -> str:
        return self.job.job_id

    def report(self, fraction: float) -> None:
        pct = percent(fraction)
        if pct > self.progress_percent:
            self.progress_percent = pct
            self.progress_dirty = True

    def cancel(self) -> None:
        """Stop the job: its task at once before its algorithm runs, else through its executor."""
        self.cancel_requested = True
        if self.executor is not None:
            self.executor.cancel(self.job_id)
        self.interrupt_if_not_running()

    def interrupt_if_not_running(self) -> None:
        """Cancel the job's task while it is fetching or waiting for a slot (not yet running)."""
        if self.stage in {"fetching", "waiting"} and self.task is not None:
            self.task.cancel()


class RunningJobs:
    """The :class:`RunningJob` of every job this process holds, by id."""

    def __init__(self) -> None:
        self._jobs: dict[str, RunningJob] = {}

    def add(self, job: Job) -> RunningJob:
        running = RunningJob(job=job, cancel_requested=job.cancel_requested)
        self._jobs[job.job_id] = running
        return running

    def get(self, job_id: str) -> RunningJob | None:
        return self._jobs.get(job_id)

    def remove(self, job_id: str) -> None:
        self._jobs.pop(job_id, None)

    def __len__(self) -> int:
        return len(self._jobs)

    def __iter__(self) -> Iterator[RunningJob]:
        return iter(list(self._jobs.values()))

    def ids(self) -> list[str]:
        return list(self._jobs)

    def tasks(self) -> list[asyncio.Task[None]]:
        return [running.task for running in self._jobs.values() if running.task is not None]

    def report(self, job_id: str, fraction: float) -> None:
        """Progress from an executor; a job no longer held here is ignored."""
        running = self._jobs.get(job_id)
        if running is not None:
            running.report(fraction)
