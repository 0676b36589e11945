"""A job's image: where it is while the job runs, kept after it ends, swept after the retention."""

from __future__ import annotations

import os
from pathlib import Path

from primaa.jobs.images import SWEEP_INTERVAL, JobImages
from primaa.jobs.model import Job, JobStatus


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _fetched(spool: Path, job_id: str = "job-1") -> Job:
    spool.mkdir(parents=True, exist_ok=True)
    (spool / f"{job_id}.img").write_bytes(b"pixels")
    return Job(job_id=job_id, algorithm="a", parameters={}, image_url="http://x/y.png")


async def test_a_finished_jobs_image_is_kept_then_swept(tmp_path: Path) -> None:
    clock = Clock()
    images = JobImages(tmp_path, retention=3600, clock=clock)
    job = _fetched(tmp_path)
    assert images.path_of(job) == tmp_path / "job-1.img"
    done = job.evolve(status=JobStatus.COMPLETED)
    images.release(done)
    kept = images.path_of(done)
    assert kept == tmp_path / "kept" / "job-1.img"
    assert kept.read_bytes() == b"pixels"
    assert not (tmp_path / "job-1.img").exists()
    assert os.stat(kept).st_mtime == clock.now

    clock.now += 3599
    await images.sweep()
    assert kept.exists(), "within the retention"
    clock.now += SWEEP_INTERVAL + 2
    await images.sweep()
    assert not kept.exists()
    assert images.path_of(done) is None


async def test_an_upload_is_kept_under_the_job_id(tmp_path: Path) -> None:
    upload = tmp_path / "uploads" / "abc.img"
    upload.parent.mkdir(parents=True)
    upload.write_bytes(b"uploaded")
    job = Job(job_id="job-2", algorithm="a", parameters={}, image_path=str(upload))
    images = JobImages(tmp_path, retention=60, clock=Clock())
    assert images.path_of(job) == upload
    failed = job.evolve(status=JobStatus.FAILED)
    images.release(failed)
    assert not upload.exists()
    assert images.path_of(failed) == tmp_path / "kept" / "job-2.img"


def test_no_retention_removes_the_image_when_the_job_ends(tmp_path: Path) -> None:
    images = JobImages(tmp_path, retention=0, clock=Clock())
    job = _fetched(tmp_path).evolve(status=JobStatus.CANCELLED)
    images.release(job)
    assert not (tmp_path / "job-1.img").exists()
    assert not (tmp_path / "kept").exists()
    assert images.path_of(job) is None


def test_a_job_id_that_cannot_name_a_file_has_no_image(tmp_path: Path) -> None:
    images = JobImages(tmp_path, retention=60, clock=Clock())
    job = Job(job_id="../../etc", algorithm="a", parameters={}, status=JobStatus.COMPLETED)
    assert images.path_of(job) is None
