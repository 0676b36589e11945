"""The web viewer in Chromium: submit, watch, see detections over the image, zoom a slide,
cancel, give an API key; no console errors, no CSP violations, job data shown as text."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import aiohttp
import numpy as np

from primaa.jobs.model import JobStatus
from tests.browser.conftest import Viewer, insert_finished
from tests.conftest import CallbackReceiver, ImageServer, make_settings
from tests.imaging.conftest import SVS

KEY = "viewer-key-6f1e2d3c4b5a69788796a5b4c3d2e1f0"
XSS = "<img src=x onerror=window.__xss=1>"
DRAWN_PIXELS = """() => {
  const canvas = document.getElementById("overlay");
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let drawn = 0;
  for (let i = 3; i < data.length; i += 4) if (data[i]) drawn++;
  return drawn;
}"""


async def _drawn_pixels(viewer: Viewer) -> int:
    drawn: int = await viewer.page.evaluate(DRAWN_PIXELS)
    return drawn


async def test_submit_through_the_form_watch_it_complete_and_see_the_detections(
    open_viewer: Any, image_server: ImageServer, tmp_path: Path
) -> None:
    viewer: Viewer = await open_viewer(make_settings(tmp_path / "data"))
    page = viewer.page
    await page.goto(viewer.url("#/submit"))
    await page.wait_for_selector("#param-sensitivity")
    await page.fill("#image_url", image_server.url("/tile.png"))
    await page.select_option("#algorithm_name", "poi_detection")
    await page.click("#submit-job")
    await page.wait_for_url(re.compile(r"#/jobs/[0-9a-f-]+$"))
    job_id = page.url.rsplit("/", 1)[-1]
    await page.wait_for_selector("#job-status:text-is('Completed')", timeout=60_000)
    await page.wait_for_selector("#overlay-count:has-text('objects in view')")
    assert await _drawn_pixels(viewer) > 0
    count = await page.text_content("#overlay-count")
    assert count is not None
    assert re.match(r"\d+ objects in view", count)
    await page.uncheck("#toggle-overlay")
    assert await _drawn_pixels(viewer) == 0
    await page.check("#toggle-overlay")
    assert await _drawn_pixels(viewer) > 0
    async with page.expect_download() as geojson_download:
        await page.click("#download-geojson")
    download = await geojson_download.value
    assert download.suggested_filename == f"{job_id}.geojson"
    saved = _read_json(await download.path())
    assert saved["geometry"]["type"] == "MultiPoint"
    async with page.expect_download() as qupath_download:
        await page.click("#download-qupath")
    saved = _read_json(await (await qupath_download.value).path())
    assert saved["type"] == "FeatureCollection"
    assert not await page.is_visible("#cancel-job")

    await page.click("a[href='#/jobs']")
    row = page.locator(f"tr[data-job-id='{job_id}']")
    await row.wait_for()
    assert await row.locator(".status").text_content() == "Completed"
    assert await row.locator("progress").get_attribute("value") == "100"
    await page.select_option("#filter-status", "Failed")
    await page.wait_for_selector(f"tr[data-job-id='{job_id}']", state="detached")
    await viewer.assert_clean()


async def test_a_validation_error_is_shown_next_to_its_field(
    open_viewer: Any, image_server: ImageServer, tmp_path: Path
) -> None:
    viewer: Viewer = await open_viewer(make_settings(tmp_path / "data"))
    page = viewer.page
    await page.goto(viewer.url("#/submit"))
    await page.wait_for_selector("#param-sensitivity")
    await page.fill("#image_url", image_server.url("/tile.png"))
    await page.fill("#param-sensitivity", "5")
    await page.click("#submit-job")
    error = page.locator("#error-param-sensitivity")
    await error.wait_for()
    assert "less than or equal to 1" in (await error.text_content() or "")
    assert await page.text_content("#error-general") == ""
    await page.fill("#param-sensitivity", "")
    await page.fill("#image_url", "not a url")
    await page.click("#submit-job")
    await page.wait_for_selector("#error-image_url:has-text('URL')")
    assert await page.text_content("#error-param-sensitivity") == ""
    assert "#/submit" in page.url, "nothing was submitted"
    await viewer.assert_clean(422)


async def test_cancel_a_running_job(
    open_viewer: Any, image_server: ImageServer, tmp_path: Path
) -> None:
    viewer: Viewer = await open_viewer(make_settings(tmp_path / "data"))
    async with aiohttp.ClientSession() as session:
        response = await session.post(
            str(viewer.server.make_url("/jobs")),
            json={
                "image_url": image_server.url("/tile.png"),
                "algorithm_name": "test_sleep",
                "parameters": {"seconds": 60, "steps": 600},
            },
        )
        job_id = (await response.json())["job_id"]
    page = viewer.page
    await page.goto(viewer.url(f"#/jobs/{job_id}"))
    await page.wait_for_selector("#job-status:text-is('Running')")
    await page.click("#cancel-job")
    await page.wait_for_selector("#job-status:text-is('Cancelled')", timeout=30_000)
    assert not await page.is_visible("#cancel-job")
    await viewer.assert_clean()


async def test_callback_deliveries_are_listed(
    open_viewer: Any,
    image_server: ImageServer,
    callback_receiver: CallbackReceiver,
    tmp_path: Path,
) -> None:
    viewer: Viewer = await open_viewer(make_settings(tmp_path / "data"))
    callback_receiver.answers.append(503)
    async with aiohttp.ClientSession() as session:
        response = await session.post(
            str(viewer.server.make_url("/jobs")),
            json={
                "image_url": image_server.url("/tile.png"),
                "algorithm_name": "test_sleep",
                "parameters": {"seconds": 0.1, "steps": 2},
                "callback_url": callback_receiver.url,
            },
        )
        job_id = (await response.json())["job_id"]
    await callback_receiver.next()
    page = viewer.page
    await page.goto(viewer.url(f"#/jobs/{job_id}"))
    rows = page.locator("#deliveries-table tbody tr")
    await rows.nth(1).wait_for()
    assert await rows.nth(0).locator("td").nth(1).text_content() == "503"
    assert await rows.nth(1).locator("td").nth(1).text_content() == "200"
    assert callback_receiver.url in (await page.text_content("#deliveries") or "")
    await viewer.assert_clean()


async def test_the_jobs_list_pages_newest_first(open_viewer: Any, tmp_path: Path) -> None:
    viewer: Viewer = await open_viewer(make_settings(tmp_path / "data"))
    ids = [
        await insert_finished(viewer.server, status=JobStatus.CANCELLED, error="cancelled")
        for _ in range(27)
    ]
    page = viewer.page
    await page.goto(viewer.url("#/jobs"))
    rows = page.locator("#jobs-body tr[data-job-id]")
    await rows.nth(24).wait_for()
    assert await rows.count() == 25
    assert await rows.nth(0).get_attribute("data-job-id") == ids[-1]
    assert await page.is_disabled("#page-prev")
    await page.click("#page-next")
    await page.wait_for_selector("#page-label:text-is('page 2')")
    await page.wait_for_selector(f"tr[data-job-id='{ids[0]}']")
    assert await rows.count() == 2
    assert await page.is_disabled("#page-next")
    await page.click("#page-prev")
    await page.wait_for_selector(f"tr[data-job-id='{ids[-1]}']")
    await viewer.assert_clean()


async def test_the_page_asks_for_an_api_key_once_per_session(
    open_viewer: Any, tmp_path: Path
) -> None:
    viewer: Viewer = await open_viewer(make_settings(tmp_path / "data", api_keys=(KEY,)))
    page = viewer.page
    await page.goto(viewer.url())
    await page.wait_for_selector("#key-prompt", state="visible")
    await page.fill("#key-input", "wrong-key")
    await page.click("#key-form button")
    await page.wait_for_selector("#key-error:has-text('not valid')")
    await page.fill("#key-input", KEY)
    await page.click("#key-form button")
    await page.wait_for_selector("#key-prompt", state="hidden")
    await page.wait_for_selector("#jobs-body td.notice:text-is('No jobs.')")
    assert await page.evaluate("sessionStorage.getItem('primaa-api-key')") == KEY
    await page.reload()
    await page.wait_for_selector("#jobs-body td.notice")
    assert not await page.is_visible("#key-prompt")
    await viewer.assert_clean(401)


async def test_nothing_from_a_job_becomes_html(open_viewer: Any, tmp_path: Path) -> None:
    viewer: Viewer = await open_viewer(make_settings(tmp_path / "data"))
    job_id = await insert_finished(
        viewer.server,
        status=JobStatus.FAILED,
        algorithm=XSS,
        parameters={"note": XSS},
        image_url=f"http://images.invalid/{XSS}",
        error=f"the algorithm failed: {XSS}",
    )
    page = viewer.page
    await page.goto(viewer.url(f"#/jobs/{job_id}"))
    await page.wait_for_selector("#job-error:not([hidden])")
    assert XSS in (await page.text_content("#job-error") or "")
    assert XSS in (await page.text_content("#job-parameters") or "")
    assert XSS in (await page.text_content("#job-image-url") or "")
    assert XSS in (await page.text_content("#job-details") or "")
    await page.goto(viewer.url("#/jobs"))
    await page.wait_for_selector(f"tr[data-job-id='{job_id}']")
    await page.wait_for_timeout(500)
    assert await page.locator("img[src='x']").count() == 0
    assert await page.evaluate("window.__xss") is None
    # The image is not available (404): the page says so in words.
    await viewer.assert_clean(404)


async def test_a_large_slide_result_loads_only_windows_while_zooming(
    open_viewer: Any, tmp_path: Path
) -> None:
    """500,000 nuclei over a whole-slide image: the page asks only for bounded windows."""
    viewer: Viewer = await open_viewer(make_settings(tmp_path / "data"))
    rng = np.random.default_rng(0)
    width, height = 2220, 2967
    points = np.column_stack([rng.uniform(0, width, 500_000), rng.uniform(0, height, 500_000)])
    result = {
        "type": "Feature",
        "geometry": {"type": "MultiPoint", "coordinates": np.round(points, 1).tolist()},
        "properties": {"measurements": {"count": 500_000}},
    }
    job_id = await insert_finished(viewer.server, status=JobStatus.COMPLETED, result=result)
    kept = tmp_path / "data" / "spool" / "kept"
    kept.mkdir(parents=True)
    shutil.copyfile(SVS, kept / f"{job_id}.img")

    page = viewer.page
    await page.goto(viewer.url(f"#/jobs/{job_id}"))
    await page.wait_for_selector("#overlay-count:has-text('500,000 in all')", timeout=60_000)
    assert "showing 5,000" in (await page.text_content("#overlay-count") or "")
    assert await _drawn_pixels(viewer) > 0
    first_windows = _windows(viewer.requests)
    first_levels = _tile_levels(viewer.requests)
    box = await page.locator("#osd").bounding_box()
    assert box is not None
    await page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    for _ in range(16):
        await page.mouse.wheel(0, -400)
        await page.wait_for_timeout(100)
    # (wait_for_function would evaluate a string, which the page's CSP rightly refuses.)
    for _ in range(150):
        windows = _windows(viewer.requests)
        if len(windows) > len(first_windows) and _area(windows[-1]) < _area(windows[0]) / 20:
            break
        await page.wait_for_timeout(200)
    windows = _windows(viewer.requests)
    assert len(windows) > len(first_windows)
    assert all(limit == 5000 for _, limit in windows)
    assert _area(windows[-1]) < _area(windows[0]) / 20, "zoomed in: a smaller window"
    assert max(_tile_levels(viewer.requests)) > max(first_levels), "deeper tiles were read"
    assert not [u for u in viewer.requests if u.endswith("/result")], "never the whole result"
    assert await _drawn_pixels(viewer) > 0
    await viewer.assert_clean()


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def _windows(requests: list[str]) -> list[tuple[tuple[float, ...], int]]:
    found = []
    for url in requests:
        parsed = urlparse(url)
        if parsed.path.endswith("/result"):
            query = parse_qs(parsed.query)
            bbox = tuple(float(v) for v in query["bbox"][0].split(","))
            found.append((bbox, int(query["limit"][0])))
    return found


def _area(window: tuple[tuple[float, ...], int]) -> float:
    (x0, y0, x1, y1), _ = window
    return (x1 - x0) * (y1 - y0)


def _tile_levels(requests: list[str]) -> list[int]:
    return [int(match[1]) for url in requests if (match := re.search(r"/image_files/(\d+)/", url))]
