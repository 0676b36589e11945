"""Slide jobs through the real app and its real worker processes: tiles merged into level-0
coordinates, progress rising, cancel, an algorithm that declares no resolution, the built-ins."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp.test_utils import TestClient
from scipy.spatial import cKDTree

from primaa.app import create_app
from primaa.imaging.slides import open_slide
from primaa.plugins.builtin.nuclei import PoiDetection
from tests.conftest import TEST_PLUGINS, make_settings, wait_for_job
from tests.support.slides import BuiltSlide, build_dotted_slide

SVS = Path(__file__).resolve().parents[1] / "data" / "CMU-1-Small-Region.svs"
PLUGINS = (*TEST_PLUGINS, "tests.support.slide_algorithms")


@pytest.fixture(scope="module")
def dotted(tmp_path_factory: pytest.TempPathFactory) -> BuiltSlide:
    return build_dotted_slide(tmp_path_factory.mktemp("dots") / "dots.tif", size=(4096, 3072))


@pytest.fixture
async def client(aiohttp_client: Callable[..., Any], tmp_path: Path) -> TestClient[Any, Any]:
    settings = make_settings(
        tmp_path / "data",
        workers=2,
        plugins=PLUGINS,
        slide_tile_size=512,
        max_image_pixels=4_000_000,
        kill_grace_seconds=0.5,
    )
    test_client: TestClient[Any, Any] = await aiohttp_client(create_app(settings))
    return test_client


async def upload(
    client: TestClient[Any, Any], path: Path, algorithm: str, parameters: str = "{}"
) -> str:
    form = aiohttp.FormData()
    form.add_field("algorithm_name", algorithm)
    form.add_field("parameters", parameters)
    data = await asyncio.to_thread(path.read_bytes)
    form.add_field("image", io.BytesIO(data), filename=path.name, content_type="image/tiff")
    response = await client.post("/jobs", data=form)
    assert response.status == 202, await response.text()
    job_id: str = (await response.json())["job_id"]
    return job_id


async def result(client: TestClient[Any, Any], job_id: str) -> dict[str, Any]:
    feature: dict[str, Any] = await (await client.get(f"/jobs/{job_id}/result")).json()
    return feature


async def test_a_slide_job_is_tiled_merged_in_level0_and_reports_rising_progress(
    client: TestClient[Any, Any], dotted: BuiltSlide
) -> None:
    job_id = await upload(client, dotted.path, "test_dots", '{"seconds": 0.3}')
    seen: list[float] = []
    for _ in range(3000):
        job = await (await client.get(f"/jobs/{job_id}")).json()
        if job["status"] in {"Completed", "Failed", "Cancelled"}:
            break
        seen.append(job["progress"])
        await asyncio.sleep(0.05)
    assert job["status"] == "Completed", job
    assert len({p for p in seen if 0 < p < 100}) >= 3, f"progress rose in steps: {seen}"
    assert seen == sorted(seen)
    feature = await result(client, job_id)
    found = np.asarray(feature["geometry"]["coordinates"], np.float64)
    assert len(found) == len(dotted.centres), "no dot doubled or lost"
    distance, nearest = cKDTree(dotted.centres).query(found)
    assert distance.max() <= 1.5
    assert len(set(nearest.tolist())) == len(found)
    measurements = feature["properties"]["measurements"]
    assert measurements["count"] == len(found)
    assert measurements["tiles"] == 20


async def test_cancelling_a_slide_job_stops_its_tiles_not_yet_started(
    client: TestClient[Any, Any], dotted: BuiltSlide, tmp_path: Path
) -> None:
    logs = tmp_path / "log"
    logs.mkdir()
    job_id = await upload(
        client, dotted.path, "test_dots", f'{{"seconds": 2.0, "log_dir": "{logs}"}}'
    )
    for _ in range(1500):
        if list(logs.iterdir()):
            break
        await asyncio.sleep(0.02)
    response = await client.post(f"/jobs/{job_id}/cancel")
    assert response.status in {200, 202}, await response.text()
    job = await wait_for_job(client, job_id, within=10.0)
    assert job["status"] == "Cancelled"
    started = len(list(logs.iterdir()))
    assert started <= 6, f"{started} of 20 tiles started: only those handed out (4) and the next"


async def test_an_algorithm_that_declares_no_resolution_refuses_a_large_slide(
    client: TestClient[Any, Any],
) -> None:
    job_id = await upload(client, SVS, "test_sleep", '{"seconds": 0, "steps": 1}')
    job = await wait_for_job(client, job_id)
    assert job["status"] == "Failed"
    assert "'test_sleep' declares no resolution (mpp)" in job["error"]
    assert "2220 x 2967 px" in job["error"]


async def test_the_algorithms_say_how_they_run_on_slides(client: TestClient[Any, Any]) -> None:
    poi = await (await client.get("/algorithms/poi_detection")).json()
    assert poi["slides"] == {"mpp": 0.5, "border_um": 24.0, "tiled": True}
    roi = await (await client.get("/algorithms/roi_detection")).json()
    assert roi["slides"] == {"mpp": 8.0, "border_um": 0.0, "tiled": False}
    flat_only = await (await client.get("/algorithms/test_sleep")).json()
    assert flat_only["slides"] is None


async def test_roi_detection_reads_the_slide_in_one_piece_and_answers_in_level0(
    client: TestClient[Any, Any],
) -> None:
    job_id = await upload(client, SVS, "roi_detection")
    job = await wait_for_job(client, job_id, within=60.0)
    assert job["status"] == "Completed", job
    feature = await result(client, job_id)
    rings = [np.asarray(p[0]) for p in feature["geometry"]["coordinates"]]
    assert rings, "the tissue of the slide is found"
    xs = np.concatenate([ring[:, 0] for ring in rings])
    ys = np.concatenate([ring[:, 1] for ring in rings])
    assert xs.max() > 1500, "level-0 coordinates, not those of the 8 µm/px image (~140 px)"
    assert -0.5 <= xs.min() <= xs.max() <= 2219.5, "inside the slide"
    assert -0.5 <= ys.min() <= ys.max() <= 2966.5
    measurements = feature["properties"]["measurements"]
    assert 0 < measurements["tissue_area_px"] <= 2220 * 2967


async def test_poi_detection_on_a_slide_finds_what_it_finds_on_the_whole_image(
    client: TestClient[Any, Any],
) -> None:
    job_id = await upload(client, SVS, "poi_detection")
    job = await wait_for_job(client, job_id, within=180.0)
    assert job["status"] == "Completed", job
    feature = await result(client, job_id)
    tiled = np.asarray(feature["geometry"]["coordinates"], np.float64)
    assert feature["properties"]["measurements"]["tiles"] > 4
    with open_slide(SVS) as slide:
        whole_image = slide.read_region(0, 0, *slide.dimensions)
        mpp = slide.mpp
    whole = PoiDetection().run(whole_image, {"mpp": mpp, "sensitivity": 0.5}, lambda _: None)
    assert whole.geometry is not None
    reference = np.asarray(whole.geometry["coordinates"], np.float64)
    assert abs(len(tiled) - len(reference)) <= 0.03 * len(reference), "none lost or doubled"
    # The detector itself reports a few pairs closer than 4 px; seams add (almost) none.
    close = len(cKDTree(tiled).query_pairs(4.0)) - len(cKDTree(reference).query_pairs(4.0))
    assert close <= len(tiled) / 1000, f"{close} more close pairs: nuclei doubled at seams"
    # Its foreground threshold adapts to each tile (512 px here, 2048 px on the whole
    # image), so a centre moves by a pixel or two now and then, and faint nuclei differ.
    distance, _ = cKDTree(reference).query(tiled)
    assert np.mean(distance <= 3.0) >= 0.8, "the tiles find the same nuclei, where they are"


async def test_a_pyramidal_tiff_on_shared_storage_is_tiled_in_place(
    aiohttp_client: Callable[..., Any], dotted: BuiltSlide, tmp_path: Path
) -> None:
    settings = make_settings(
        tmp_path / "data",
        workers=2,
        plugins=PLUGINS,
        slide_tile_size=512,
        file_roots=(dotted.path.parent,),
    )
    client: TestClient[Any, Any] = await aiohttp_client(create_app(settings))
    response = await client.post(
        "/jobs", json={"image_url": dotted.path.as_uri(), "algorithm_name": "test_dots"}
    )
    assert response.status == 202, await response.text()
    job_id = (await response.json())["job_id"]
    job = await wait_for_job(client, job_id)
    assert job["status"] == "Completed", job
    assert job["image"]["width"] == 4096
    feature = await result(client, job_id)
    assert len(feature["geometry"]["coordinates"]) == len(dotted.centres)
    assert feature["properties"]["measurements"]["tiles"] == 20
