"""Result files no job names (a process died between writing one and the final write) are
removed once they are old enough; files a job names, and young ones, stay."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from primaa.jobs import large_results
from primaa.jobs.large_results import ORPHAN_AGE, LargeResults
from primaa.jobs.model import JobStatus
from primaa.results.feature import summary_feature
from primaa.results.files import ResultFiles, file_reference
from primaa.store.memory import MemoryStore
from tests.store.test_store_contract import feature, make_job, run_one


async def _completed_with_file(store: MemoryStore, files: ResultFiles) -> str:
    await store.create(make_job(0))
    running = await run_one(store)
    name = files.write(running.job_id, b"{}")
    reference = file_reference(summary_feature(feature(running.job_id)), name, 2)
    done = running.moved_to(JobStatus.COMPLETED)
    await store.finish(done, expected=JobStatus.RUNNING, result=reference)
    return name


def _age(files: ResultFiles, *names: str) -> None:
    written = time.time() - ORPHAN_AGE - 60
    for name in names:
        os.utime(files.directory / name, (written, written))


async def test_old_files_no_job_names_are_removed(tmp_path: Path) -> None:
    store = MemoryStore()
    files = ResultFiles(tmp_path / "results")
    named = await _completed_with_file(store, files)
    second_write = files.write("job-0000", b"{}")
    unknown_job = files.write("job-9999", b"{}")
    young = files.write("job-8888", b"{}")
    _age(files, named, second_write, unknown_job)

    results = LargeResults(files, inline_max_bytes=0, callback_max_bytes=0)
    await results.sweep_orphans(store.get_result)
    assert sorted(p.name for p in files.directory.iterdir()) == sorted([named, young])


async def test_many_files_are_swept_a_batch_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(large_results, "ORPHAN_CHECKS", 2)
    store = MemoryStore()
    files = ResultFiles(tmp_path / "results")
    orphans = [files.write(f"job-{n}", b"{}") for n in range(5)]
    for n, name in enumerate(orphans):
        written = time.time() - ORPHAN_AGE - 600 + n
        os.utime(files.directory / name, (written, written))

    results = LargeResults(files, inline_max_bytes=0, callback_max_bytes=0)
    left = []
    for _ in range(3):
        await results.sweep_orphans(store.get_result)
        left.append(len(list(files.directory.iterdir())))
    assert left == [3, 1, 0]
