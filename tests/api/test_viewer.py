"""The viewer's endpoints: Deep Zoom of a job's image, result windows, and their access rules."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from PIL import Image

from primaa.app import create_app
from tests.conftest import ImageServer, make_settings, wait_for_job

AppClient = TestClient[Any, Any]
KEY_A = "alice-0d8f7e6c5b4a39281706f5e4d3c2b1a0"
KEY_B = "bob-1a2b3c4d5e6f708192a3b4c5d6e7f8091"


async def _completed(client: AppClient, image_server: ImageServer, **headers: str) -> str:
    response = await client.post(
        "/jobs",
        json={"image_url": image_server.url("/tile.png"), "algorithm_name": "poi_detection"},
        headers=headers,
    )
    assert response.status == 202, await response.text()
    job_id: str = (await response.json())["job_id"]
    deadline_job = await _wait(client, job_id, headers)
    assert deadline_job["status"] == "Completed", deadline_job
    return job_id


async def _wait(client: AppClient, job_id: str, headers: dict[str, str]) -> dict[str, Any]:
    if not headers:
        return await wait_for_job(client, job_id)
    client.session.headers.update(headers)
    try:
        return await wait_for_job(client, job_id)
    finally:
        for name in headers:
            client.session.headers.pop(name, None)


async def test_a_finished_jobs_image_in_deep_zoom(
    client: AppClient, image_server: ImageServer, tmp_path: Path
) -> None:
    job_id = await _completed(client, image_server)
    assert (tmp_path / "data" / "spool" / "kept" / f"{job_id}.img").is_file()
    dzi = await client.get(f"/jobs/{job_id}/image.dzi")
    assert dzi.status == 200
    assert dzi.content_type == "application/xml"
    text = await dzi.text()
    assert 'TileSize="254"' in text
    assert '<Size Width="160" Height="120"/>' in text

    tile = await client.get(f"/jobs/{job_id}/image_files/8/0_0.jpeg")
    assert tile.status == 200
    assert tile.content_type == "image/jpeg"
    assert Image.open(io.BytesIO(await tile.read())).size == (160, 120)
    etag = tile.headers["ETag"]
    assert "max-age" in tile.headers["Cache-Control"]
    again = await client.get(
        f"/jobs/{job_id}/image_files/8/0_0.jpeg", headers={"If-None-Match": etag}
    )
    assert again.status == 304
    for missing in ("9/0_0.jpeg", "8/1_0.jpeg", "8/0_0.png", "x/0_0.jpeg", "8/../0_0.jpeg"):
        response = await client.get(f"/jobs/{job_id}/image_files/{missing}")
        assert response.status == 404, missing
    unknown = await client.get("/jobs/no-such-job/image.dzi")
    assert unknown.status == 404


async def test_without_retention_the_image_is_gone_when_the_job_ends(
    aiohttp_client: Callable[..., Any], image_server: ImageServer, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path / "data", image_retention_seconds=0)
    client: AppClient = await aiohttp_client(create_app(settings))
    job_id = await _completed(client, image_server)
    response = await client.get(f"/jobs/{job_id}/image.dzi")
    assert response.status == 404
    assert (await response.json())["type"] == "no_image"
    assert not list((tmp_path / "data" / "spool").glob("**/*.img"))


async def test_tiles_follow_the_jobs_access_rules(
    aiohttp_client: Callable[..., Any], image_server: ImageServer, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path / "data", api_keys=(KEY_A, KEY_B))
    client: AppClient = await aiohttp_client(create_app(settings))
    job_id = await _completed(client, image_server, **{"X-API-Key": KEY_A})
    paths = (
        f"/jobs/{job_id}/image.dzi",
        f"/jobs/{job_id}/image_files/8/0_0.jpeg",
        f"/jobs/{job_id}/result?bbox=0,0,100,100",
    )
    for path in paths:
        assert (await client.get(path)).status == 401, path
        assert (await client.get(path, headers={"X-API-Key": KEY_B})).status == 404, path
        assert (await client.get(path, headers={"X-API-Key": KEY_A})).status == 200, path
    page = await client.get("/")
    assert page.status == 200, "the page itself is public: it asks for the key"
    assert (await client.get("/viewer/viewer.js")).status == 200


async def test_result_windows(client: AppClient, image_server: ImageServer) -> None:
    job_id = await _completed(client, image_server)
    full = await (await client.get(f"/jobs/{job_id}/result")).json()
    points = full["geometry"]["coordinates"]
    assert len(points) > 2
    response = await client.get(f"/jobs/{job_id}/result?bbox=0,0,80,120")
    assert response.status == 200
    assert response.content_type == "application/geo+json"
    window = await response.json()
    expected = [p for p in points if p[0] <= 80]
    assert window["geometry"]["coordinates"] == expected
    assert window["properties"]["view"]["objects_total"] == len(points)
    limited = await (await client.get(f"/jobs/{job_id}/result?bbox=0,0,160,120&limit=2")).json()
    assert limited["properties"]["view"]["returned"] == 2
    assert limited["properties"]["view"]["truncated"] is True
    assert limited["properties"]["view"]["density"]["counts"]
    qupath = await (await client.get(f"/jobs/{job_id}/result?bbox=0,0,80,120&format=qupath")).json()
    assert qupath["type"] == "FeatureCollection"
    assert len(qupath["features"]) == len(expected)


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("bbox=1,2,3", 400),
        ("bbox=a,b,c,d", 400),
        ("bbox=1,2,3,4,5", 400),
        ("bbox=0,0,1,1&limit=0", 422),
    ],
)
async def test_a_malformed_window_is_refused(
    client: AppClient, image_server: ImageServer, query: str, status: int
) -> None:
    job_id = await _completed(client, image_server)
    response = await client.get(f"/jobs/{job_id}/result?{query}")
    assert response.status == status
    assert (await response.json())["code"] == status


async def test_the_viewer_endpoints_are_documented(client: AppClient) -> None:
    document = await (await client.get("/openapi.json")).json()
    paths = document["paths"]
    assert "/jobs/{job_id}/image.dzi" in paths
    assert "/jobs/{job_id}/image_files/{level}/{tile}" in paths
    result = paths["/jobs/{job_id}/result"]["get"]
    assert "400" in result["responses"]
    query = {p["name"] for p in result["parameters"] if p["in"] == "query"}
    assert {"bbox", "limit", "format"} <= query
