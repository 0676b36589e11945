"""The Dask executor on a real cluster: a ``dask scheduler`` and two ``dask worker``
processes (one thread each, under their nannies) on loopback, started by the tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from PIL import Image

pytest.importorskip("distributed", reason="the Dask executor needs primaa[dask] (distributed)")

import psutil
from distributed import Client

from primaa.execution.dask import check_scheduler
from primaa.execution.dask.executor import AlgorithmExited, DaskExecutor
from primaa.execution.dask.on_worker import worker_algorithms
from primaa.imaging.slides import open_slide, plan_slide
from primaa.jobs.ports import ImageUnavailable, OutOfMemory, Task, WorkerCrashed
from primaa.plugins.algorithm import JobCancelled
from tests.conftest import TEST_PLUGINS
from tests.execution.conftest import WITHIN
from tests.support.dask_cluster import DaskCluster
from tests.support.slides import NUCLEI, build_slide, scatter

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


@pytest.fixture
async def executor(cluster: DaskCluster, observer: Client) -> AsyncIterator[DaskExecutor]:
    dask = DaskExecutor(
        scheduler=cluster.address,
        max_pixels=10_000_000,
        plugin_modules=TEST_PLUGINS,
        log_format="json",
        kill_grace=1.0,
    )
    await dask.start()
    try:
        yield dask
    finally:
        await dask.close()


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("images") / "image.png"
    Image.fromarray(np.full((48, 64, 3), 200, dtype=np.uint8)).save(path)
    return path


async def events(observer: Client, executor: DaskExecutor) -> list[list[Any]]:
    return [msg for _, msg in await observer.get_events(executor.topic)]


async def started(observer: Client, executor: DaskExecutor, task_id: str) -> list[list[Any]]:
    """The "started" events of every run of ``task_id``, once there is one."""
    prefix = f"primaa-{task_id}-"
    while True:
        found = [
            e
            for e in await events(observer, executor)
            if e[0] == "started" and e[1].startswith(prefix)
        ]
        if found:
            return found
        await asyncio.sleep(0.05)


async def ended(observer: Client, executor: DaskExecutor, key: str) -> None:
    while True:
        if any(e[0] == "ended" and e[1] == key for e in await events(observer, executor)):
            return
        await asyncio.sleep(0.05)


async def test_the_workers_load_primaa_and_its_module_plugins_through_the_worker_plugin(
    executor: DaskExecutor, observer: Client
) -> None:
    loaded = await observer.run(worker_algorithms)
    assert len(loaded) == 2
    for algorithms in loaded.values():
        assert {"poi_detection", "test_sleep", "test_crash"} <= set(algorithms)


async def test_the_workers_run_opencv_on_one_thread_as_the_pool_workers_do(
    executor: DaskExecutor, observer: Client
) -> None:
    """OpenCV's default is a thread per CPU, which fights the other workers for the cores."""
    threads = await observer.run(cv2.getNumThreads)
    assert list(threads.values()) == [1, 1]


def page_faults_of_reused_buffers() -> int:
    """In a worker: the minor page faults of making and freeing a 4 MB buffer 50 times.

    A ``bytearray``, from glibc's malloc: numpy asks for transparent huge pages for large
    arrays, whose few faults would hide the difference.
    """
    before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    for _ in range(50):
        buffer = bytearray(4 << 20)
        del buffer
    return resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before


async def test_the_workers_reuse_freed_arrays_despite_the_nannys_malloc_trim_threshold(
    executor: DaskExecutor, observer: Client
) -> None:
    """The nanny's ``MALLOC_TRIM_THRESHOLD_`` alone maps every buffer afresh: 50 x its
    1,024 pages faulted in (51,250 measured); reused, about once (1,009)."""
    faults = await observer.run(page_faults_of_reused_buffers)
    assert len(faults) == 2
    assert all(count < 5 * 1024 for count in faults.values()), faults


async def test_a_task_runs_in_a_worker_process_with_its_progress_reported(
    executor: DaskExecutor, observer: Client, image: Path
) -> None:
    progress: list[tuple[str, float]] = []
    executor.on_progress(lambda task_id, fraction: progress.append((task_id, fraction)))
    result = await executor.run(Task("job-1", "test_sleep", image, {"seconds": 1.5, "steps": 15}))
    assert result.measurements["width"] == 64
    worker_pids = set((await observer.run(os.getpid)).values())
    assert int(result.measurements["pid"]) in worker_pids
    assert int(result.measurements["pid"]) != os.getpid()
    fractions = [fraction for task_id, fraction in progress if task_id == "job-1"]
    assert len(fractions) >= 3, progress
    assert fractions == sorted(fractions)
    assert 0 < fractions[-2] < 1


async def test_failures_keep_their_meaning(executor: DaskExecutor, image: Path) -> None:
    with pytest.raises(ValueError, match="boom"):
        await executor.run(Task("job-fail", "test_fail", image, {}))
    with pytest.raises(AlgorithmExited, match="SystemExit"):
        await executor.run(Task("job-exit", "test_exit", image, {}))
    not_an_image = image.with_name("not-an-image.png")
    not_an_image.write_bytes(b"<html>no</html>")
    with pytest.raises(ImageUnavailable):
        await executor.run(Task("job-bad", "test_sleep", not_an_image, {}))
    with pytest.raises(OutOfMemory):
        await executor.run(Task("job-hog", "test_hog", image, {"megabytes": 2**40, "touch": False}))
    with pytest.raises(ImageUnavailable, match="shared with the workers"):
        await executor.run(Task("job-gone", "test_sleep", image.with_name("gone.png"), {}))


async def test_slide_tiles_run_on_the_workers_each_reading_its_own_region(
    executor: DaskExecutor, tmp_path: Path
) -> None:
    size = (1024, 768)
    slide = build_slide(
        tmp_path / "slide.tif",
        size=size,
        sources=sorted(NUCLEI.glob("*.png")),
        positions=scatter(size, 2, (384, 384), seed=3),
        mpp=0.25,
    ).path
    with open_slide(slide) as opened:
        tiles = plan_slide(opened, mpp=0.5, tile_size=256, border=8)
    assert len(tiles) >= 2
    tasks = [
        Task("slide-job", "test_sleep", slide, {"seconds": 0.1, "steps": 1}, tile, f"slide-job/{n}")
        for n, tile in enumerate(tiles)
    ]
    results = await asyncio.gather(*(executor.run(task) for task in tasks))
    for tile, result in zip(tiles, results, strict=True):
        assert (result.measurements["width"], result.measurements["height"]) == (
            tile.width,
            tile.height,
        )


async def test_cancel_stops_a_running_task_at_its_next_progress_report(
    executor: DaskExecutor, observer: Client, image: Path
) -> None:
    run = asyncio.create_task(
        executor.run(Task("job-long", "test_sleep", image, {"seconds": 120, "steps": 1200}))
    )
    (start,) = await asyncio.wait_for(started(observer, executor, "job-long"), WITHIN)
    pid = await observer.run(os.getpid, workers=[start[2]])
    executor.cancel("job-long")
    with pytest.raises(JobCancelled):
        await asyncio.wait_for(run, WITHIN)
    # The worker stopped the algorithm (it had two minutes to go) within the kill grace,
    # so its process was not restarted.
    await asyncio.wait_for(ended(observer, executor, start[1]), WITHIN)
    await asyncio.sleep(executor.kill_grace + 0.5)
    assert await observer.run(os.getpid, workers=[start[2]]) == pid


async def test_a_task_that_ignores_its_cancel_has_its_worker_restarted_after_the_grace(
    executor: DaskExecutor, observer: Client, image: Path
) -> None:
    spinning = asyncio.Event()
    executor.on_progress(lambda task_id, fraction: fraction > 0 and spinning.set())
    run = asyncio.create_task(executor.run(Task("job-spin", "test_spin", image, {"seconds": 120})))
    await asyncio.wait_for(spinning.wait(), WITHIN)  # its last report: it is in its loop
    (start,) = await started(observer, executor, "job-spin")
    pid = (await observer.run(os.getpid, workers=[start[2]]))[start[2]]
    executor.cancel("job-spin")
    with pytest.raises(JobCancelled):
        await asyncio.wait_for(run, WITHIN)
    while True:  # its nanny restarts it: the old process ends
        with contextlib.suppress(psutil.NoSuchProcess):
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                await asyncio.sleep(0.1)
                continue
        break
    await observer.wait_for_workers(2, timeout=WITHIN)


async def test_cancel_of_a_queued_task_means_it_never_runs(
    executor: DaskExecutor, observer: Client, image: Path
) -> None:
    busy = {"seconds": 120, "steps": 1200}
    running = [
        asyncio.create_task(executor.run(Task(f"job-busy-{n}", "test_sleep", image, busy)))
        for n in range(2)
    ]
    for n in range(2):
        await asyncio.wait_for(started(observer, executor, f"job-busy-{n}"), WITHIN)
    queued = asyncio.create_task(executor.run(Task("job-queued", "test_sleep", image, {})))
    await asyncio.sleep(0.5)
    executor.cancel("job-queued")
    with pytest.raises(JobCancelled):
        await asyncio.wait_for(queued, WITHIN)
    for n in range(2):
        executor.cancel(f"job-busy-{n}")
    for task in running:
        with pytest.raises(JobCancelled):
            await asyncio.wait_for(task, WITHIN)
    # Both workers are free again, and the cancelled one never started anywhere.
    await executor.run(Task("job-after", "test_sleep", image, {"seconds": 0.1, "steps": 1}))
    assert not any(e[1].startswith("primaa-job-queued-") for e in await events(observer, executor))


async def test_the_tasks_of_concurrent_jobs_interleave(
    executor: DaskExecutor, observer: Client, image: Path
) -> None:
    """Job a's eight tasks were submitted before job b's one: b's runs before a's fifth.

    Dask hands a task straight to a worker while few wait (here a's first two), and
    queues the others on the scheduler, which hands them out by priority as the
    workers' slots free (a slot and a bit per thread): b's first task (priority 0)
    goes with the first of them, before a's later ones; with all priorities equal
    it would run last.
    """
    job_a, job_b, blocking = (str(uuid.uuid4()) for _ in range(3))
    busy = {"seconds": 120, "steps": 1200}
    blockers = [
        asyncio.create_task(
            executor.run(Task(blocking, "test_sleep", image, busy, None, f"{blocking}/{n}"))
        )
        for n in range(2)
    ]
    for n in range(2):
        await asyncio.wait_for(started(observer, executor, f"{blocking}/{n}"), WITHIN)
    short = {"seconds": 0.2, "steps": 1}
    tasks = [Task(job_a, "test_sleep", image, short, None, f"{job_a}/{n}") for n in range(8)]
    tasks.append(Task(job_b, "test_sleep", image, short, None, f"{job_b}/0"))
    runs = []
    for task in tasks:
        runs.append(asyncio.create_task(executor.run(task)))
        await asyncio.sleep(0.05)  # submitted in this order
    for n in range(2):
        executor.cancel(f"{blocking}/{n}")
    await asyncio.gather(*runs)
    await asyncio.gather(*blockers, return_exceptions=True)
    order = [
        e[1].removeprefix("primaa-").rsplit("-", 1)[0]
        for e in await events(observer, executor)
        if e[0] == "started" and not e[1].startswith(f"primaa-{blocking}/")
    ]
    assert len(order) == 9
    assert order.index(f"{job_b}/0") < order.index(f"{job_a}/4"), order


async def test_a_worker_killed_mid_task_has_its_task_run_again_elsewhere(
    executor: DaskExecutor, observer: Client, image: Path
) -> None:
    run = asyncio.create_task(
        executor.run(Task("job-survivor", "test_sleep", image, {"seconds": 3, "steps": 30}))
    )
    (first,) = await asyncio.wait_for(started(observer, executor, "job-survivor"), WITHIN)
    pids = await observer.run(os.getpid, workers=[first[2]])
    os.kill(pids[first[2]], signal.SIGKILL)
    result = await asyncio.wait_for(run, WITHIN)
    assert int(result.measurements["pid"]) != pids[first[2]]
    runs = await started(observer, executor, "job-survivor")
    assert len(runs) == 2, "the task ran once more, on another worker process"


async def test_a_task_that_kills_every_worker_it_lands_on_ends_as_worker_crashed(
    executor: DaskExecutor, image: Path
) -> None:
    with pytest.raises(WorkerCrashed, match="every Dask worker that ran this task died"):
        await asyncio.wait_for(executor.run(Task("job-crash", "test_sigkill", image, {})), WITHIN)


def test_an_unreachable_scheduler_is_one_clear_line() -> None:
    problem = check_scheduler("tcp://127.0.0.1:9", timeout=1.0)
    assert problem is not None
    assert problem.startswith("cannot reach the Dask scheduler at 'tcp://127.0.0.1:9'")
    assert "\n" not in problem
