"""A slide job as tile tasks on real worker processes: merged once at the seams, progress
in steps, cancel before tiles start, a crashing or failing tile, two jobs sharing workers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial import cKDTree

from primaa.execution.pool import ProcessPoolRunner
from primaa.execution.tiling import TilingExecutor
from primaa.jobs.ports import Task, TaskError, WorkerCrashed
from primaa.plugins.algorithm import JobCancelled
from primaa.plugins.registry import load_registry
from tests.conftest import TEST_PLUGINS, synthetic_he_png
from tests.support.slides import BuiltSlide, build_dotted_slide

PLUGINS = (*TEST_PLUGINS, "tests.support.slide_algorithms")
SIZE = (4096, 3072)


@pytest.fixture(scope="module")
def dotted(tmp_path_factory: pytest.TempPathFactory) -> BuiltSlide:
    return build_dotted_slide(tmp_path_factory.mktemp("dots") / "dots.tif", size=SIZE)


@pytest.fixture(scope="module")
def red(tmp_path_factory: pytest.TempPathFactory) -> BuiltSlide:
    """Dots and a red mark: the tile that holds it crashes its worker."""
    return build_dotted_slide(
        tmp_path_factory.mktemp("red") / "red.tif", size=SIZE, marks=[((3000, 2000), (255, 0, 0))]
    )


@pytest.fixture(scope="module")
def green(tmp_path_factory: pytest.TempPathFactory) -> BuiltSlide:
    """Dots and a green mark: the algorithm raises on the tile that holds it."""
    return build_dotted_slide(
        tmp_path_factory.mktemp("green") / "green.tif",
        size=SIZE,
        marks=[((1000, 2500), (0, 255, 0))],
    )


@pytest.fixture
async def pool(tmp_path: Path) -> AsyncIterator[ProcessPoolRunner]:
    runner = ProcessPoolRunner(
        workers=2,
        cancel_dir=tmp_path / "cancel",
        max_pixels=10_000_000,
        plugin_modules=PLUGINS,
        log_format="json",
        kill_grace=0.5,
    )
    runner.start()
    try:
        yield runner
    finally:
        await runner.close()


@pytest.fixture
def tiling(pool: ProcessPoolRunner) -> TilingExecutor:
    registry = load_registry(modules=PLUGINS)
    return TilingExecutor(pool, registry.get, workers=2, max_pixels=10_000_000, tile_size=512)


def _task(slide: Path, job_id: str, **parameters: object) -> Task:
    return Task(
        job_id, "test_dots", slide, {"seconds": 0.0, "log_dir": None, "tag": "", **parameters}
    )


def _started(log_dir: Path) -> list[tuple[str, int, float]]:
    rows = [path.read_text().split() for path in log_dir.iterdir()]
    return [(tag, int(pid), float(at)) for tag, pid, at in rows]


async def test_dots_on_every_seam_are_each_kept_once_in_level0_coordinates(
    tiling: TilingExecutor, dotted: BuiltSlide
) -> None:
    plan = await tiling.plan(_task(dotted.path, "plan"))
    assert plan is not None
    assert len(plan.tiles) >= 12, "the slide is cut into many tiles"
    assert plan.downsample == 2.0, "0.5 µm/px read from the 0.25 µm/px slide's next level"
    assert plan.pixel_size_um == 0.5

    result = await tiling.run(_task(dotted.path, "job-seams"))

    assert result.geometry is not None
    found = np.asarray(result.geometry["coordinates"], np.float64)
    truth = dotted.centres
    assert len(found) == len(truth), "no dot doubled or lost"
    distance, nearest = cKDTree(truth).query(found)
    assert distance.max() <= 1.5, "every centre in level-0 pixels, where it was planted"
    assert len(set(nearest.tolist())) == len(truth), "each planted dot found exactly once"
    assert result.measurements["count"] == len(truth)
    assert result.measurements["tiles"] == len(plan.tiles)
    pids = {m["pid"] for m in result.object_measurements or ()}
    assert len(pids) == 2, "both workers ran tiles of the one job"
    assert {m["pixel_size_um"] for m in result.object_measurements or ()} == {0.5}
    combined = result.measurements
    assert combined["tile_dots"] > len(truth), "its combine saw every tile's count, seams twice"
    assert combined["combined_megapixels"] == pytest.approx(combined["analysed_megapixels"], 1e-3)
    assert combined["combined_pixel_size_um"] == 0.5, "with the job's parameters"


async def test_progress_is_tiles_done_over_tiles_total_in_steps(
    tiling: TilingExecutor, dotted: BuiltSlide
) -> None:
    seen: list[float] = []
    tiling.on_progress(lambda task_id, fraction: seen.append(fraction) if task_id == "job-p" else 0)
    plan = await tiling.plan(_task(dotted.path, "plan"))
    assert plan is not None
    await tiling.run(_task(dotted.path, "job-p"))
    total = len(plan.tiles)
    assert seen == [n / total for n in range(1, total + 1)]


async def test_cancel_stops_tiles_not_yet_started(
    tiling: TilingExecutor, dotted: BuiltSlide, tmp_path: Path
) -> None:
    logs = tmp_path / "log"
    logs.mkdir()
    plan = await tiling.plan(_task(dotted.path, "plan"))
    assert plan is not None
    job = asyncio.ensure_future(
        tiling.run(_task(dotted.path, "job-c", seconds=1.0, log_dir=str(logs)))
    )
    for _ in range(1500):
        if len(list(logs.iterdir())) >= 2:
            break
        await asyncio.sleep(0.02)
    tiling.cancel("job-c")
    with pytest.raises(JobCancelled):
        await job
    started = len(list(logs.iterdir()))
    assert started <= tiling.window + 2, "only tiles already handed out had started"
    assert started < len(plan.tiles), f"{len(plan.tiles) - started} tiles never started"


async def test_a_tile_that_crashes_its_worker_fails_the_job_naming_the_tile(
    tiling: TilingExecutor, red: BuiltSlide
) -> None:
    with pytest.raises(WorkerCrashed, match=r"tile \d+ of \d+ \(level-0 x=\d+, y=\d+") as crash:
        await tiling.run(_task(red.path, "job-crash"))
    assert "worker process died (exit code 3)" in str(crash.value)


async def test_a_tile_whose_algorithm_raises_fails_the_job_naming_the_tile(
    tiling: TilingExecutor, green: BuiltSlide
) -> None:
    with pytest.raises(TaskError, match=r"tile 17 of 20 .*ValueError: a green pixel"):
        await tiling.run(_task(green.path, "job-fail"))


async def test_two_slide_jobs_share_the_workers(
    tiling: TilingExecutor, dotted: BuiltSlide, tmp_path: Path
) -> None:
    logs = tmp_path / "log"
    logs.mkdir()
    jobs = [
        tiling.run(_task(dotted.path, f"job-{tag}", seconds=0.1, log_dir=str(logs), tag=tag))
        for tag in ("a", "b")
    ]
    first, second = await asyncio.gather(*jobs)
    assert first.measurements["count"] == second.measurements["count"] == len(dotted.centres)
    starts = sorted(_started(logs), key=lambda row: row[2])
    order = [tag for tag, _, _ in starts]
    last_a = max(i for i, tag in enumerate(order) if tag == "a")
    first_b = order.index("b")
    assert first_b < last_a / 2, f"job b waited for most of job a: {''.join(order)}"
    for tag in ("a", "b"):
        assert len({pid for t, pid, _ in starts if t == tag}) == 2, f"job {tag} used both workers"


async def test_tiles_interrupted_by_another_jobs_crash_run_again(
    tiling: TilingExecutor, dotted: BuiltSlide, tmp_path: Path
) -> None:
    logs = tmp_path / "log"
    logs.mkdir()
    flat = tmp_path / "flat.png"
    flat.write_bytes(synthetic_he_png())
    slide_job = asyncio.ensure_future(
        tiling.run(_task(dotted.path, "job-survivor", seconds=0.5, log_dir=str(logs)))
    )
    for _ in range(1500):
        if list(logs.iterdir()):
            break
        await asyncio.sleep(0.02)
    # Both workers run 0.5 s tiles in step, so an instant crash can fall between two tiles
    # and interrupt none; exiting a quarter of a tile later lands inside the other's tile.
    with pytest.raises(WorkerCrashed):
        await tiling.run(Task("job-crasher", "test_crash", flat, {"seconds": 0.25}))
    result = await slide_job
    assert result.measurements["count"] == len(dotted.centres), "every tile ran to the end"
    assert len(list(logs.iterdir())) > result.measurements["tiles"], "some tiles ran twice"


async def test_a_time_limit_on_the_job_stops_its_tiles(
    tiling: TilingExecutor, dotted: BuiltSlide, tmp_path: Path
) -> None:
    logs = tmp_path / "log"
    logs.mkdir()
    task = _task(dotted.path, "job-late", seconds=1.0, log_dir=str(logs))
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(1.5):
            await tiling.run(task)
    started = len(list(logs.iterdir()))
    assert started <= tiling.window + 2
    # Tiles handed out before the limit stop; none is handed out after it.
    follow_up = await tiling.run(_task(dotted.path, "job-after"))
    assert follow_up.measurements["count"] == len(dotted.centres)
    assert len(list(logs.iterdir())) == started, "no tile of the timed-out job ran later"
