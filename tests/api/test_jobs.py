"""The REST surface: /jobs, /algorithms, /health, /metrics, /openapi.json, /docs."""

from __future__ import annotations

import io
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import CallbackReceiver, ImageServer, wait_for_callback, wait_for_job


async def submit(client: TestClient[Any, Any], **body: Any) -> dict[str, Any]:
    response = await client.post("/jobs", json=body)
    assert response.status == 202, await response.text()
    job: dict[str, Any] = await response.json()
    assert response.headers["Location"] == f"/jobs/{job['job_id']}"
    return job


async def test_json_submission_runs_with_parameters_and_serves_the_result(
    client: TestClient[Any, Any], image_server: ImageServer
) -> None:
    job = await submit(
        client,
        image_url=image_server.url("/tile.png"),
        algorithm_name="poi_detection",
        parameters={"sensitivity": 0.7},
        callback_token="secret-token",
    )
    assert job["status"] == "Pending"
    assert job["parameters"]["sensitivity"] == 0.7
    assert "nucleus_diameter" in job["parameters"], "defaults are filled in at submission"
    done = await wait_for_job(client, job["job_id"])
    assert done["status"] == "Completed"
    assert done["progress"] == 100.0
    assert done["attempts"] == 1
    assert done["started_at"] <= done["finished_at"]
    assert "secret-token" not in str(done)

    result = await client.get(f"/jobs/{job['job_id']}/result")
    assert result.status == 200
    assert result.content_type == "application/geo+json"
    feature = await result.json()
    assert feature["geometry"]["type"] == "MultiPoint"
    assert feature["properties"]["measurements"]["count"] == len(feature["geometry"]["coordinates"])

    qupath = await (await client.get(f"/jobs/{job['job_id']}/result?format=qupath")).json()
    assert qupath["type"] == "FeatureCollection"
    assert len(qupath["features"]) == len(feature["geometry"]["coordinates"])
    assert all(f["properties"]["objectType"] == "detection" for f in qupath["features"])


async def test_upload_submission_runs_on_the_uploaded_file(
    client: TestClient[Any, Any], image_server: ImageServer
) -> None:
    form = aiohttp.FormData()
    form.add_field("algorithm_name", "test_sleep")
    form.add_field("parameters", '{"seconds": 0.01, "steps": 1}')
    form.add_field("image", image_server.png, filename="tile.png", content_type="image/png")
    response = await client.post("/jobs", data=form)
    assert response.status == 202, await response.text()
    job = await response.json()
    assert job["image_url"] is None
    done = await wait_for_job(client, job["job_id"])
    assert done["status"] == "Completed", done
    feature = await (await client.get(f"/jobs/{job['job_id']}/result")).json()
    assert feature["properties"]["measurements"]["width"] == 160
    assert feature["properties"]["measurements"]["height"] == 120
    assert feature["geometry"]["coordinates"] == [[159.0, 119.0]], "[x, y], origin top-left"


async def test_upload_without_image_part_is_422_and_leaves_no_file(
    client: TestClient[Any, Any],
) -> None:
    form = aiohttp.FormData()
    form.add_field("algorithm_name", "poi_detection")
    form.add_field("other", b"x", filename="x.bin")
    response = await client.post("/jobs", data=form)
    assert response.status == 422
    assert "image" in (await response.json())["details"]


@pytest.mark.parametrize(
    ("body", "status", "kind"),
    [
        (b"", 400, "invalid_json"),
        (b"[1, 2]", 400, "invalid_json"),
        (b'"text"', 400, "invalid_json"),
        (b"{", 400, "invalid_json"),
        (b'{"algorithm_name": "poi_detection"}', 422, "validation_error"),
        (b'{"image_url": 5, "algorithm_name": "poi_detection"}', 422, "validation_error"),
        (b'{"image_url": "ftp://x/y.png", "algorithm_name": "poi_detection"}', 422, None),
        (
            b'{"image_url": "http://h/i.png", "algorithm_name": "poi_detection", "extra": 1}',
            422,
            "validation_error",
        ),
        (b'{"image_url": "http://h/i.png", "algorithm_name": "nope"}', 422, "unknown_algorithm"),
        (
            b'{"image_url": "http://h/i.png", "algorithm_name": "poi_detection",'
            b' "parameters": {"no_such_parameter": 1}}',
            422,
            "invalid_parameters",
        ),
        (
            b'{"image_url": "http://h/i.png", "algorithm_name": "poi_detection",'
            b' "parameters": {"sensitivity": 7}}',
            422,
            "invalid_parameters",
        ),
        (
            b'{"image_url": "http://h/i.png", "algorithm_name": "poi_detection", "timeout": 1e9}',
            422,
            "invalid_request",
        ),
    ],
)
async def test_bad_submissions_get_json_errors_and_create_no_job(
    client: TestClient[Any, Any], body: bytes, status: int, kind: str | None
) -> None:
    response = await client.post("/jobs", data=body, headers={"Content-Type": "application/json"})
    assert response.status == status
    error = await response.json()
    assert error["code"] == status
    assert error["error"]
    if kind is not None:
        assert error["type"] == kind
    assert (await (await client.get("/jobs")).json())["jobs"] == []


async def test_oversized_body_is_413(client: TestClient[Any, Any]) -> None:
    response = await client.post(
        "/jobs",
        data=io.BytesIO(b"x" * (2 * 1024 * 1024)),
        headers={"Content-Type": "application/json"},
    )
    assert response.status == 413
    assert (await response.json())["type"] == "too_large"


async def test_private_url_refused_at_submission_when_not_allowed(
    aiohttp_client: Any, tmp_path: Any
) -> None:
    from primaa.app import create_app
    from tests.conftest import make_settings

    client = await aiohttp_client(
        create_app(make_settings(tmp_path / "d", allow_private_urls=False))
    )
    response = await client.post(
        "/jobs", json={"image_url": "http://127.0.0.1/x.png", "algorithm_name": "poi_detection"}
    )
    assert response.status == 422
    body = await response.json()
    assert body["type"] == "invalid_request"
    assert "image_url" in body["details"]


async def test_unknown_ids_are_404_everywhere(client: TestClient[Any, Any]) -> None:
    for method, path in [
        ("GET", "/jobs/nope"),
        ("GET", "/jobs/nope/result"),
        ("POST", "/jobs/nope/cancel"),
        ("GET", "/algorithms/nope"),
        ("GET", "/no/such/endpoint"),
    ]:
        response = await client.request(method, path)
        assert response.status == 404, path
        body = await response.json()
        assert body["type"] == "not_found"
        assert body["request_id"] == response.headers["X-Request-ID"]


async def test_wrong_method_is_405_json(client: TestClient[Any, Any]) -> None:
    response = await client.delete("/jobs")
    assert response.status == 405
    assert (await response.json())["type"] == "method_not_allowed"


async def test_listing_filters_and_pages_without_gaps(
    client: TestClient[Any, Any], image_server: ImageServer
) -> None:
    ids = []
    for i in range(5):
        algorithm = "test_sleep" if i % 2 else "test_async"
        job = await submit(
            client,
            image_url=image_server.url("/tile.png"),
            algorithm_name=algorithm,
            parameters={"seconds": 0.01, "steps": 1},
        )
        ids.append(job["job_id"])
    for job_id in ids:
        await wait_for_job(client, job_id)

    seen: list[str] = []
    cursor = None
    while True:
        query = "/jobs?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = await (await client.get(query)).json()
        seen.extend(j["job_id"] for j in page["jobs"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids)), "newest first, each job exactly once"

    sleeps = await (await client.get("/jobs?algorithm_name=test_sleep")).json()
    assert {j["algorithm_name"] for j in sleeps["jobs"]} == {"test_sleep"}
    assert len(sleeps["jobs"]) == 2
    completed = await (await client.get("/jobs?status=Completed")).json()
    assert len(completed["jobs"]) == 5
    assert (await (await client.get("/jobs?status=Running")).json())["jobs"] == []

    bad = await client.get("/jobs?status=Sleeping")
    assert bad.status == 422
    bad_cursor = await client.get("/jobs?cursor=garbage")
    assert bad_cursor.status == 422
    assert (await bad_cursor.json())["type"] == "bad_cursor"


async def test_algorithms_are_listed_with_their_parameter_schema(
    client: TestClient[Any, Any],
) -> None:
    listing = await (await client.get("/algorithms")).json()
    by_name = {a["name"]: a for a in listing["algorithms"]}
    assert by_name["poi_detection"]["plugin"] == "builtin"
    assert by_name["roi_detection"]["plugin"] == "builtin"
    assert by_name["test_async"]["cpu_bound"] is False
    assert listing["broken_plugins"] == []

    detail = await (await client.get("/algorithms/poi_detection")).json()
    schema = detail["parameters"]
    assert schema["type"] == "object"
    assert "sensitivity" in schema["properties"]
    assert schema["additionalProperties"] is False


async def test_openapi3_documents_every_route_and_algorithm(client: TestClient[Any, Any]) -> None:
    document = await (await client.get("/openapi.json")).json()
    assert document["openapi"].startswith("3.")
    paths = document["paths"]
    for path, method in [
        ("/job-submission", "post"),
        ("/status/{job_id}", "get"),
        ("/jobs", "post"),
        ("/jobs", "get"),
        ("/jobs/{job_id}", "get"),
        ("/jobs/{job_id}", "delete"),
        ("/jobs/{job_id}/result", "get"),
        ("/jobs/{job_id}/cancel", "post"),
        ("/algorithms", "get"),
        ("/algorithms/{name}", "get"),
        ("/health", "get"),
        ("/metrics", "get"),
    ]:
        operation = paths[path][method]
        assert operation["summary"], (path, method)
        assert operation["responses"], (path, method)
    submission = paths["/jobs"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} <= set(submission)
    schemas = document["components"]["schemas"]
    assert "Parameters_poi_detection" in schemas
    assert "poi_detection" in schemas["JobSubmission"]["properties"]["algorithm_name"]["enum"]
    assert "Error" in schemas
    listed = {p["name"] for p in paths["/jobs"]["get"]["parameters"]}
    assert {"status", "algorithm_name", "cursor", "limit"} <= listed

    docs = await client.get("/docs")
    assert docs.status == 200
    page = await docs.text()
    assert "/openapi.json" in page
    assert (await client.get("/docs/static/swagger-ui-bundle.js")).status == 200


async def test_health_and_metrics(client: TestClient[Any, Any], image_server: ImageServer) -> None:
    health = await client.get("/health")
    assert health.status == 200
    body = await health.json()
    assert body["status"] == "ok"
    assert body["store"] == "ok"
    assert body["executor"] == "ok"
    assert "poi_detection" in body["algorithms"]

    job = await submit(client, image_url=image_server.url("/tile.png"), algorithm_name="test_fail")
    await wait_for_job(client, job["job_id"])
    metrics = await (await client.get("/metrics")).text()
    assert 'primaa_jobs{algorithm="test_fail",status="Failed"} 1.0' in metrics
    assert 'primaa_jobs_finished_total{algorithm="test_fail",status="Failed"} 1.0' in metrics
    assert "primaa_queue_depth 0.0" in metrics
    assert "primaa_job_duration_seconds_bucket" in metrics
    assert "primaa_http_requests_total" in metrics


async def test_callback_retries_until_delivered_and_attempts_are_visible(
    client: TestClient[Any, Any], image_server: ImageServer, callback_receiver: CallbackReceiver
) -> None:
    callback_receiver.answers.extend([500, 503])
    job = await submit(
        client,
        image_url=image_server.url("/tile.png"),
        algorithm_name="test_sleep",
        parameters={"seconds": 0.01, "steps": 1},
        callback_url=callback_receiver.url,
        callback_token="tok",
    )
    delivered = await callback_receiver.next()
    assert delivered.body["properties"]["job_id"] == job["job_id"]
    assert len(callback_receiver.received) == 3
    assert {c.headers["Authorization"] for c in callback_receiver.received} == {"Bearer tok"}

    state = (await wait_for_callback(client, job["job_id"], "Delivered"))["callback"]
    assert [a["status_code"] for a in state["attempts"]] == [500, 503, 200]
    assert state["attempts"][0]["error"] == "receiver answered HTTP 500"
    assert state["url"] == callback_receiver.url


async def test_callback_gives_up_after_the_schedule(
    client: TestClient[Any, Any], image_server: ImageServer, callback_receiver: CallbackReceiver
) -> None:
    callback_receiver.answers.extend([500] * 10)
    job = await submit(
        client,
        image_url=image_server.url("/tile.png"),
        algorithm_name="test_fail",
        callback_url=callback_receiver.url,
    )
    state = (await wait_for_callback(client, job["job_id"], "Failed"))["callback"]
    assert len(state["attempts"]) == 4, "first attempt plus the three retries configured"
    assert len(callback_receiver.received) == 4


async def test_an_empty_upload_is_422_not_413(client: TestClient[Any, Any]) -> None:
    form = aiohttp.FormData()
    form.add_field("algorithm_name", "poi_detection")
    form.add_field("image", b"", filename="empty.png", content_type="image/png")
    response = await client.post("/jobs", data=form)
    assert response.status == 422
    body = await response.json()
    assert body["details"]["image"] == ["upload is empty"]
    assert (await (await client.get("/jobs")).json())["jobs"] == []


async def test_the_front_page_is_the_web_viewer_under_a_strict_csp(client: Any) -> None:
    response = await client.get("/", allow_redirects=False)
    assert response.status == 200
    assert response.content_type == "text/html"
    page = await response.text()
    assert '<script src="/viewer/viewer.js"' in page
    assert "<script>" not in page
    assert "<style" not in page
    assert "style=" not in page
    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy
    assert "script-src 'self';" in policy
    assert "unsafe-inline" not in policy
    bundle = await client.get("/viewer/viewer.js")
    assert bundle.status == 200
    assert "THIRD_PARTY_LICENSES.txt" in (await bundle.text())[:200]
    notices = await client.get("/viewer/THIRD_PARTY_LICENSES.txt")
    assert "openseadragon" in await notices.text()


async def test_an_empty_cursor_is_the_first_page(client: Any) -> None:
    response = await client.get("/jobs?cursor=")
    assert response.status == 200
    assert (await response.json())["jobs"] == []


async def test_an_empty_image_url_is_refused_as_invalid_not_malformed(client: Any) -> None:
    response = await client.post("/jobs", json={"image_url": "", "algorithm_name": "poi_detection"})
    assert response.status == 422
    assert "image_url" in (await response.json())["details"]
