"""What the job manager needs from the outside, as protocols; backends are chosen in app.py."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from primaa.plugins.algorithm import AlgorithmResult


class WorkerLost(Exception):
    """The process running a job died (crash, kill, out of memory); the job may be retried."""


class CpuExecutor(Protocol):
    """Runs CPU-bound algorithms away from the event loop (a process pool)."""

    async def run(
        self, job_id: str, algorithm: str, image_path: Path, parameters: Mapping[str, Any]
    ) -> AlgorithmResult: ...

    def cancel(self, job_id: str) -> None:
        """Ask the running job to stop at its next progress report."""

    def forget(self, job_id: str) -> None:
        """Drop any cancellation left from an earlier run of the job."""

    def on_progress(self, sink: Callable[[str, float], None]) -> None: ...


class ImageSource(Protocol):
    async def fetch(self, url: str, job_id: str) -> Path:
        """Download the image to a spool file; raise an error whose message names the cause."""


class Notifier(Protocol):
    def wake(self) -> None:
        """A delivery was queued: send it soon."""
