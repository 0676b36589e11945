"""The original API keeps its paths, fields and spellings, with real status codes."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import CallbackReceiver, ImageServer, wait_for_callback


async def test_original_submission_completes_and_calls_back_with_bearer_token(
    client: TestClient[Any, Any], image_server: ImageServer, callback_receiver: CallbackReceiver
) -> None:
    response = await client.post(
        "/job-submission",
        json={
            "image_url": image_server.url("/tile.png"),
            "callback_url": callback_receiver.url,
            "callback_token": "t0ken",
            "algorithm_name": "poi_detection",
        },
    )
    assert response.status == 200
    body = await response.json()
    assert body["code"] == 200
    assert body["status"] == "Pending"
    assert body["error"] is None
    job_id = body["job_id"]

    callback = await callback_receiver.next()
    assert callback.headers["Authorization"] == "Bearer t0ken"
    assert callback.body["type"] == "Feature"
    assert callback.body["geometry"]["type"] == "MultiPoint"
    properties = callback.body["properties"]
    assert properties["job_id"] == job_id
    assert properties["algorithm_name"] == "poi_detection"
    assert properties["image_url"] == image_server.url("/tile.png")
    assert properties["status"] == "Completed"

    status = await client.get(f"/status/{job_id}")
    assert status.status == 200
    assert await status.json() == {
        "code": 200,
        "job_id": job_id,
        "status": "Completed",
        "error": None,
    }
    result = await client.get(f"/jobs/{job_id}/result")
    assert result.status == 200
    assert await result.json() == callback.body


async def test_unknown_job_is_a_real_404_with_status_not_found(
    client: TestClient[Any, Any],
) -> None:
    response = await client.get("/status/does-not-exist")
    assert response.status == 404
    body = await response.json()
    assert body["code"] == 404
    assert body["status"] == "NotFound"
    assert body["job_id"] == "does-not-exist"
    assert "does-not-exist" in body["error"]


async def test_invalid_submission_is_4xx_and_creates_no_job(
    client: TestClient[Any, Any], image_server: ImageServer
) -> None:
    unknown = await client.post(
        "/job-submission",
        json={"image_url": image_server.url("/tile.png"), "algorithm_name": "nope"},
    )
    assert unknown.status == 422
    body = await unknown.json()
    assert body["type"] == "unknown_algorithm"
    assert "poi_detection" in body["details"]["available"]

    malformed = await client.post(
        "/job-submission", data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert malformed.status == 400
    assert (await malformed.json())["type"] == "invalid_json"

    missing = await client.post("/job-submission", json={"algorithm_name": "poi_detection"})
    assert missing.status == 422
    assert "image_url" in (await missing.json())["details"]

    listing = await (await client.get("/jobs")).json()
    assert listing["jobs"] == []


@pytest.mark.parametrize(
    ("path", "reason"),
    [("/page.html", "returned a web page"), ("/disguised.png", "not an image")],
)
async def test_failed_image_fails_the_job_and_calls_back_the_failure(
    client: TestClient[Any, Any],
    image_server: ImageServer,
    callback_receiver: CallbackReceiver,
    path: str,
    reason: str,
) -> None:
    response = await client.post(
        "/job-submission",
        json={
            "image_url": image_server.url(path),
            "callback_url": callback_receiver.url,
            "callback_token": "t",
            "algorithm_name": "poi_detection",
        },
    )
    job_id = (await response.json())["job_id"]
    callback = await callback_receiver.next()
    assert callback.body["geometry"] is None
    assert callback.body["properties"]["status"] == "Failed"
    assert reason in callback.body["properties"]["error"]

    status = await (await client.get(f"/status/{job_id}")).json()
    assert status["status"] == "Failed"
    assert status["error"] == callback.body["properties"]["error"]
    result = await client.get(f"/jobs/{job_id}/result")
    assert result.status == 409
    job = await wait_for_callback(client, job_id, "Delivered")
    assert [a["status_code"] for a in job["callback"]["attempts"]] == [200]
