"""Where a job's image is, and how long it stays once the job is over.

While a job is unfinished its image is the upload (``Job.image_path``) or the file
the fetcher spooled (``<spool>/<job_id>.img``), kept for retries. When the job ends
the image moves to ``<spool>/kept/<job_id>.img`` so the web viewer can still show
the detections over it, and a sweep removes kept images ``retention`` seconds after
their job ended (the file's modification time is the moment it was kept). A
retention of 0 removes the image when the job ends, as before the viewer existed.

The spool is local to each replica: with several replicas, a finished job's image
is on the replica that ran it (a shared ``data_dir`` makes it visible to all).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Final

import structlog

from primaa.jobs.model import Job

log = structlog.get_logger(__name__)

_JOB_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
#: Kept images are swept at most this often (a directory listing each time).
SWEEP_INTERVAL: Final = 60.0


class JobImages:
    """The one place that knows which file holds a job's image, before and after it ends."""

    def __init__(self, spool_dir: Path, *, retention: float, clock: Callable[[], float]) -> None:
        self._spool_dir = spool_dir
        self._kept_dir = spool_dir / "kept"
        self._retention = retention
        self._clock = clock
        self._last_sweep = float("-inf")

    def _kept(self, job_id: str) -> Path | None:
        if not _JOB_ID.fullmatch(job_id) or ".." in job_id:
            return None
        return self._kept_dir / f"{job_id}.img"

    def _working(self, job: Job) -> Path | None:
        """The file a job reads while it runs: its upload, or its spooled download."""
        if job.image_path is not None:
            return Path(job.image_path)
        if job.image_url is not None and _JOB_ID.fullmatch(job.job_id):
            return self._spool_dir / f"{job.job_id}.img"
        return None

    def path_of(self, job: Job) -> Path | None:
        """The local file of the job's image, or ``None`` when there is none (not fetched
        yet, removed after the retention, or held by another replica)."""
        candidates = [self._working(job)] if not job.status.is_terminal else []
        candidates.append(self._kept(job.job_id))
        for path in candidates:
            if path is not None and path.is_file():
                return path
        return None

    def release(self, job: Job) -> None:
        """The job has ended: keep its image for the retention, or remove it now."""
        working = self._working(job)
        if working is None:
            return
        kept = self._kept(job.job_id)
        if self._retention <= 0 or kept is None:
            working.unlink(missing_ok=True)
            return
        try:
            self._kept_dir.mkdir(parents=True, exist_ok=True)
            os.replace(working, kept)
            now = self._clock()
            os.utime(kept, (now, now))
        except FileNotFoundError:
            return
        except OSError as exc:
            log.warning("job_image_not_kept", job_id=job.job_id, error=str(exc))
            working.unlink(missing_ok=True)

    def forget(self, job: Job) -> None:
        """The job was deleted: its kept image goes now, not after the retention."""
        kept = self._kept(job.job_id)
        if kept is not None:
            kept.unlink(missing_ok=True)

    async def sweep(self) -> None:
        """Remove kept images older than the retention (at most every ``SWEEP_INTERVAL``)."""
        now = self._clock()
        if now - self._last_sweep < SWEEP_INTERVAL:
            return
        self._last_sweep = now
        removed = await asyncio.to_thread(self._remove_older_than, now - self._retention)
        if removed:
            log.info("job_images_expired", count=removed)

    def _remove_older_than(self, cutoff: float) -> int:
        removed = 0
        try:
            entries = list(os.scandir(self._kept_dir))
        except FileNotFoundError:
            return 0
        for entry in entries:
            with contextlib.suppress(OSError):
                if entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
        return removed
