"""API keys: 401 without one, each key sees only its own jobs, public routes stay public,
and neither keys nor callback tokens reach a response or a log line."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import uuid
from collections.abc import Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestClient

from primaa.api.auth import client_id_of_key
from primaa.app import create_app
from primaa.config import ConfigError, hash_api_key, load_settings
from tests.conftest import CallbackReceiver, ImageServer, make_settings

KEY_A = "alice-3f9c1b7e2d6a4058b1c9e7f0a2d4c6b8"
KEY_B = "bob-8e1d2c3b4a5968778695a4b3c2d1e0f9"
TOKEN = "callback-token-5b0e7d9c3a1f4e6b8d2c"
PUBLIC = {"/", "/health", "/openapi.json", "/docs", "/docs/static", "/viewer"}

AppClient = TestClient[Any, Any]
MakeClient = Callable[..., Any]


def as_a(key: str = KEY_A) -> dict[str, str]:
    return {"X-API-Key": key}


@pytest.fixture
async def secured(aiohttp_client: MakeClient, tmp_path: Path) -> AppClient:
    settings = make_settings(tmp_path / "data", api_keys=(KEY_A, KEY_B))
    client: AppClient = await aiohttp_client(create_app(settings))
    return client


def _routes(client: AppClient) -> list[tuple[str, str]]:
    """(method, canonical path) of every route the app serves, whoever added it."""
    app: web.Application = client.app
    return [
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
    ]


def _concrete(path: str, job_id: str = "0" * 32) -> str:
    return path.replace("{job_id}", job_id).replace("{name}", "poi_detection")


async def _submit(client: AppClient, key: str, **body: Any) -> dict[str, Any]:
    response = await client.post("/jobs", json=body, headers=as_a(key))
    assert response.status == 202, await response.text()
    job: dict[str, Any] = await response.json()
    return job


async def _wait(
    client: AppClient, job_id: str, key: str, done: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """Poll the job as ``key`` until ``done(job)``."""
    job: dict[str, Any] = {}
    for _ in range(600):
        job = await (await client.get(f"/jobs/{job_id}", headers=as_a(key))).json()
        if done(job):
            return job
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} still not done: {job}")


def status_in(*statuses: str) -> Callable[[dict[str, Any]], bool]:
    return lambda job: job.get("status") in statuses


async def _assert_unauthorized(response: Any) -> None:
    assert response.status == 401, await response.text()
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    body = await response.json()
    assert body["type"] == "unauthorized"
    assert body["code"] == 401
    assert body["request_id"] == response.headers["X-Request-ID"]


async def test_every_non_public_route_is_401_without_a_key(secured: AppClient) -> None:
    checked = 0
    for method, path in _routes(secured):
        if path in PUBLIC or path == "/metrics":
            continue
        response = await secured.request(method, _concrete(path), json={})
        await _assert_unauthorized(response)
        checked += 1
    assert checked >= 9, "the job, legacy and algorithm routes were all checked"
    await _assert_unauthorized(await secured.get("/no/such/endpoint"))


@pytest.mark.parametrize(
    "headers",
    [
        {"X-API-Key": "not-a-key"},
        {"Authorization": "Bearer not-a-key"},
        {"Authorization": f"Basic {KEY_A}"},
        {"Authorization": KEY_A},
        {"X-API-Key": ""},
        {"X-API-Key": hash_api_key(KEY_A)},
        {"X-API-Key": KEY_A[:-1]},
    ],
    ids=["wrong", "wrong-bearer", "basic", "no-scheme", "empty", "the-hash", "prefix"],
)
async def test_a_wrong_key_is_401(secured: AppClient, headers: dict[str, str]) -> None:
    for path in ("/jobs", "/algorithms", f"/status/{uuid.uuid4().hex}"):
        response = await secured.get(path, headers=headers)
        await _assert_unauthorized(response)
        assert "not-a-key" not in await response.text()


@pytest.mark.parametrize(
    "headers",
    [
        {"X-API-Key": KEY_A},
        {"Authorization": f"Bearer {KEY_A}"},
        {"authorization": f"bearer {KEY_B}"},
    ],
    ids=["x-api-key", "bearer", "bearer-lowercase"],
)
async def test_either_header_form_is_accepted(secured: AppClient, headers: dict[str, str]) -> None:
    for path in ("/jobs", "/algorithms", "/algorithms/poi_detection"):
        response = await secured.get(path, headers=headers)
        assert response.status == 200, await response.text()


async def test_jobs_belong_to_the_key_that_created_them(
    secured: AppClient, image_server: ImageServer
) -> None:
    url = image_server.url("/tile.png")
    done = await _submit(
        secured, KEY_A, image_url=url, algorithm_name="test_sleep", parameters={"seconds": 0.01}
    )
    await _wait(secured, done["job_id"], KEY_A, status_in("Completed"))
    running = await _submit(
        secured,
        KEY_A,
        image_url=url,
        algorithm_name="test_sleep",
        parameters={"seconds": 60, "steps": 600},
    )
    legacy = await secured.post(
        "/job-submission",
        json={"image_url": url, "algorithm_name": "test_sleep", "parameters": {"seconds": 0.01}},
        headers={"Authorization": f"Bearer {KEY_A}"},
    )
    assert legacy.status == 200
    legacy_id = (await legacy.json())["job_id"]
    unknown = uuid.uuid4().hex

    for job_id in (done["job_id"], running["job_id"], legacy_id):
        for method, path in _routes(secured):
            if "{job_id}" not in path:
                continue
            theirs = await secured.request(method, _concrete(path, job_id), headers=as_a(KEY_B))
            nobodys = await secured.request(method, _concrete(path, unknown), headers=as_a(KEY_B))
            assert theirs.status == 404, (method, path, await theirs.text())
            body, unknown_body = await theirs.json(), await nobodys.json()
            assert body["status" if path.startswith("/status") else "type"] == (
                "NotFound" if path.startswith("/status") else "not_found"
            )
            assert nobodys.status == 404
            assert body.keys() == unknown_body.keys(), "indistinguishable from an unknown id"

        mine = await secured.get(f"/status/{job_id}", headers=as_a(KEY_A))
        assert mine.status == 200

    result = await secured.get(f"/jobs/{done['job_id']}/result", headers=as_a(KEY_A))
    assert result.status == 200
    still = await secured.get(f"/jobs/{running['job_id']}", headers=as_a(KEY_A))
    assert (await still.json())["status"] in {"Pending", "Running"}, "B's cancel did nothing"

    for query in ("", "?status=Completed", "?algorithm_name=test_sleep", "?limit=1"):
        listed_b = await (await secured.get(f"/jobs{query}", headers=as_a(KEY_B))).json()
        assert listed_b["jobs"] == [], query
    listed_a = await (await secured.get("/jobs", headers=as_a(KEY_A))).json()
    assert {j["job_id"] for j in listed_a["jobs"]} == {
        done["job_id"],
        running["job_id"],
        legacy_id,
    }

    cancel = await secured.post(f"/jobs/{running['job_id']}/cancel", headers=as_a(KEY_A))
    assert cancel.status == 202
    await _wait(secured, running["job_id"], KEY_A, status_in("Cancelled"))


async def test_the_owner_is_a_hash_prefix_not_the_key() -> None:
    assert client_id_of_key(KEY_A) == hashlib.sha256(KEY_A.encode()).hexdigest()[:16]
    assert client_id_of_key(KEY_A) != client_id_of_key(KEY_B)
    assert KEY_A not in client_id_of_key(KEY_A)


async def test_health_docs_and_openapi_need_no_key(secured: AppClient) -> None:
    for path in ("/health", "/docs", "/openapi.json", "/docs/static/swagger-ui-bundle.js"):
        response = await secured.get(path)
        assert response.status == 200, path


@pytest.mark.parametrize("required", [True, False])
async def test_metrics_need_a_key_unless_configured_otherwise(
    aiohttp_client: MakeClient, tmp_path: Path, required: bool
) -> None:
    settings = make_settings(tmp_path / "data", api_keys=(KEY_A,), metrics_require_key=required)
    client: AppClient = await aiohttp_client(create_app(settings))
    anonymous = await client.get("/metrics")
    if required:
        await _assert_unauthorized(anonymous)
    else:
        assert anonymous.status == 200
    assert (await client.get("/metrics", headers=as_a())).status == 200


async def test_hashed_keys_work_and_keep_the_owner(
    aiohttp_client: MakeClient, tmp_path: Path, image_server: ImageServer
) -> None:
    data_dir = tmp_path / "data"
    plain: AppClient = await aiohttp_client(create_app(make_settings(data_dir, api_keys=(KEY_A,))))
    job = await _submit(
        plain,
        KEY_A,
        image_url=image_server.url("/tile.png"),
        algorithm_name="test_sleep",
        parameters={"seconds": 0.01},
    )
    await _wait(plain, job["job_id"], KEY_A, status_in("Completed"))
    await plain.close()

    settings = make_settings(data_dir, api_keys=(hash_api_key(KEY_A), hash_api_key(KEY_B)))
    hashed: AppClient = await aiohttp_client(create_app(settings))
    response = await hashed.get(f"/jobs/{job['job_id']}", headers=as_a(KEY_A))
    assert response.status == 200, "same key, same client_id, whether configured plain or hashed"
    assert (await hashed.get(f"/jobs/{job['job_id']}", headers=as_a(KEY_B))).status == 404
    await _assert_unauthorized(await hashed.get("/jobs", headers=as_a(hash_api_key(KEY_A))))


def test_settings_keep_only_hashes_of_the_keys() -> None:
    settings = load_settings(env={"PRIMAA_API_KEYS": f" {KEY_A} , {hash_api_key(KEY_B)}"})
    assert settings.api_keys == (hash_api_key(KEY_A), hash_api_key(KEY_B))
    assert KEY_A not in repr(settings)
    assert KEY_A not in repr(settings.api_keys)
    upper = "sha256:" + hashlib.sha256(KEY_A.encode()).hexdigest().upper()
    assert load_settings(env={}, overrides={"api_keys": [upper]}).api_keys == (hash_api_key(KEY_A),)


@pytest.mark.parametrize("entry", ["sha256:abc", "sha256:" + "g" * 64, "sha256:" + "0" * 65])
def test_a_malformed_hash_is_a_config_error_that_does_not_repeat_it(entry: str) -> None:
    with pytest.raises(ConfigError, match="api_keys") as caught:
        load_settings(env={"PRIMAA_API_KEYS": f"{KEY_A},{entry}"})
    assert entry not in str(caught.value)
    assert KEY_A not in str(caught.value)


def test_a_non_text_key_in_a_file_is_an_error_that_does_not_repeat_it(tmp_path: Path) -> None:
    config = tmp_path / "primaa.toml"
    config.write_text("api_keys = [918273645546372819]\n")
    with pytest.raises(ConfigError, match="api_keys") as caught:
        load_settings(config, env={})
    assert "918273645546372819" not in str(caught.value)


async def test_without_keys_there_is_no_authentication(
    client: AppClient, image_server: ImageServer
) -> None:
    job = await _submit(
        client, KEY_A, image_url=image_server.url("/tile.png"), algorithm_name="test_sleep"
    )
    assert (await client.get(f"/jobs/{job['job_id']}")).status == 200
    assert (await client.get(f"/jobs/{job['job_id']}", headers=as_a(KEY_B))).status == 200
    assert (await client.get("/metrics")).status == 200
    document = await (await client.get("/openapi.json")).json()
    assert "security" not in document
    assert "securitySchemes" not in document.get("components", {})


async def test_openapi_declares_the_key_schemes(secured: AppClient) -> None:
    document = await (await secured.get("/openapi.json")).json()
    schemes = document["components"]["securitySchemes"]
    assert {"type": "apiKey", "in": "header", "name": "X-API-Key"}.items() <= next(
        s for s in schemes.values() if s["type"] == "apiKey"
    ).items()
    assert any(s["type"] == "http" and s["scheme"] == "bearer" for s in schemes.values())
    assert sorted(next(iter(r)) for r in document["security"]) == sorted(schemes)
    paths = document["paths"]
    for path in ("/health", "/docs", "/openapi.json"):
        assert paths[path]["get"]["security"] == [], path
    assert "security" not in paths["/metrics"]["get"], "metrics need a key by default"
    for path, method in (("/jobs", "post"), ("/jobs/{job_id}", "get"), ("/status/{job_id}", "get")):
        operation = paths[path][method]
        assert "security" not in operation, "the global requirement applies"
        assert "401" in operation["responses"]


@contextlib.contextmanager
def captured_logs() -> Iterator[list[MutableMapping[str, Any]]]:
    """Every log entry with the contextvars merged in, on every structlog we support.

    (``capture_logs(processors=...)`` would do, but only from structlog 25.5.)
    """
    capture = structlog.testing.LogCapture()
    previous = structlog.get_config()
    structlog.configure(processors=[structlog.contextvars.merge_contextvars, capture])
    try:
        yield capture.entries
    finally:
        structlog.configure(**previous)


async def test_no_key_or_token_in_any_response_or_log_line(
    secured: AppClient, image_server: ImageServer, callback_receiver: CallbackReceiver
) -> None:
    url = image_server.url("/tile.png")
    responses = []

    async def call(method: str, path: str, **kwargs: Any) -> Any:
        response = await secured.request(method, path, **kwargs)
        responses.append(
            (method, path, response.status, dict(response.headers), await response.read())
        )
        return response

    with captured_logs() as logs:
        submitted = await call(
            "POST",
            "/jobs",
            json={
                "image_url": url,
                "algorithm_name": "test_sleep",
                "parameters": {"seconds": 0.01},
                "callback_url": callback_receiver.url,
                "callback_token": TOKEN,
            },
            headers={"Authorization": f"Bearer {KEY_A}"},
        )
        job_id = (await submitted.json())["job_id"]
        await _wait(
            secured, job_id, KEY_A, lambda job: (job["callback"] or {}).get("state") == "Delivered"
        )
        for path in (f"/jobs/{job_id}", f"/jobs/{job_id}/result", "/jobs", f"/status/{job_id}"):
            await call("GET", path, headers=as_a(KEY_A))
        await call("POST", f"/jobs/{job_id}/callback", headers=as_a(KEY_A))
        await call(
            "POST",
            "/job-submission",
            json={"image_url": url, "algorithm_name": "test_sleep", "callback_token": TOKEN},
            headers=as_a(KEY_A),
        )
        for bad in (
            {"image_url": "not a url", "algorithm_name": "test_sleep", "callback_token": TOKEN},
            {"image_url": url, "algorithm_name": "test_sleep", "callback_token": [TOKEN]},
            {"image_url": url, "algorithm_name": "test_sleep", "callback_token": {TOKEN: TOKEN}},
            {"image_url": url, "algorithm_name": "test_sleep", "callback_token": TOKEN * 200},
        ):
            rejected = await call("POST", "/jobs", json=bad, headers=as_a(KEY_A))
            assert rejected.status == 422, await rejected.text()
            legacy = await call("POST", "/job-submission", json=bad, headers=as_a(KEY_A))
            assert legacy.status in {200, 422}
        await call("POST", "/jobs", data=f'{{"callback_token": "{TOKEN}"', headers=as_a(KEY_A))
        await call("GET", "/jobs", headers={"X-API-Key": KEY_A + "x"})
        await call("GET", "/jobs", headers={"Authorization": f"Bearer {KEY_B[:-1]}"})
        await call("GET", "/openapi.json")
        await call("GET", "/metrics", headers=as_a(KEY_B))

    delivered = callback_receiver.received[0]
    assert delivered.headers["Authorization"] == f"Bearer {TOKEN}", "the token went where it should"
    events = {entry["event"] for entry in logs}
    assert {"request", "job_submitted", "webhook_attempt"} <= events, "logs were captured"
    # A refused request's line carries no client id, whatever requests came before it.
    requests = [entry for entry in logs if entry["event"] == "request"]
    refused = [entry for entry in requests if entry["status"] == 401]
    assert len(refused) == 2
    assert not any("client_id" in entry for entry in refused)
    accepted = [entry for entry in requests if entry["path"].startswith(("/jobs", "/status"))]
    assert accepted
    assert all(entry["status"] == 401 or entry["client_id"] for entry in accepted)
    assert all(entry["request_id"] for entry in requests)
    secrets = (KEY_A, KEY_B[:-1], TOKEN)  # KEY_B[:-1] was sent, and covers KEY_B
    for entry in logs:
        for secret in secrets:
            assert secret not in repr(entry), entry
    for method, path, status, headers, body in responses:
        for secret in secrets:
            assert secret.encode() not in body, (method, path, status, body[:300])
            assert secret not in repr(headers), (method, path, headers)
    owners = {entry.get("client_id") for entry in logs if entry["event"] == "request"}
    assert client_id_of_key(KEY_A) in owners, "requests are logged with the non-secret client id"
