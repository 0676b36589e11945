"""The process pool runs tasks, not jobs: several tasks of one job (the tiles of a slide)
run at once on the workers, each reading only its own region, each cancelled on its own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from primaa.execution.pool import ProcessPoolRunner
from primaa.imaging.slides import open_slide, plan_slide
from primaa.jobs.ports import Task
from primaa.plugins.algorithm import JobCancelled
from tests.conftest import TEST_PLUGINS
from tests.support.slides import NUCLEI, build_slide, scatter


@pytest.fixture(scope="module")
def slide_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    size = (2048, 1536)
    built = build_slide(
        tmp_path_factory.mktemp("slide") / "slide.tif",
        size=size,
        sources=sorted(NUCLEI.glob("*.png")),
        positions=scatter(size, 3, (512, 512), seed=2),
        mpp=0.25,
    )
    return built.path


@pytest.fixture
async def pool(tmp_path: Path) -> AsyncIterator[ProcessPoolRunner]:
    runner = ProcessPoolRunner(
        workers=2,
        cancel_dir=tmp_path / "cancel",
        max_pixels=10_000_000,
        plugin_modules=TEST_PLUGINS,
        log_format="json",
    )
    runner.start()
    try:
        yield runner
    finally:
        await runner.close()


async def test_the_tiles_of_one_job_run_as_tasks_each_on_its_own_region(
    pool: ProcessPoolRunner, slide_path: Path
) -> None:
    with open_slide(slide_path) as slide:
        tiles = plan_slide(slide, mpp=0.5, tile_size=512, border=16)
    assert len(tiles) >= 4
    progress: dict[str, float] = {}
    pool.on_progress(lambda task_id, fraction: progress.__setitem__(task_id, fraction))
    tasks = [
        Task(
            job_id="job-1",
            algorithm="test_sleep",
            image_path=slide_path,
            parameters={"seconds": 0.2, "steps": 2},
            region=tile,
            task_id=f"job-1.{tile.index}",
        )
        for tile in tiles
    ]
    results = await asyncio.gather(*(pool.run(task) for task in tasks))
    for tile, result in zip(tiles, results, strict=True):
        assert result.measurements["width"] == tile.width
        assert result.measurements["height"] == tile.height
    assert len({r.measurements["pid"] for r in results}) == 2, "both workers took tiles"
    assert set(progress) == {task.task_id for task in tasks}


async def test_cancelling_one_task_of_a_job_leaves_its_other_tasks_running(
    pool: ProcessPoolRunner, slide_path: Path
) -> None:
    slow = {"seconds": 2.0, "steps": 20}
    first, second = (
        Task("job-2", "test_sleep", slide_path, slow, task_id=f"job-2.{n}") for n in (0, 1)
    )
    running = [asyncio.ensure_future(pool.run(task)) for task in (first, second)]
    await asyncio.sleep(0.5)
    pool.cancel(first.task_id)
    with pytest.raises(JobCancelled):
        await running[0]
    assert (await running[1]).measurements["width"] > 0
