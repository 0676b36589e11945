"""Large results on a real service with thresholds low enough that an ordinary nucleus
result is "large": stored as a gzip file, streamed (gzip or plain) exactly as a small one
is served, as QuPath and by bbox; its callback is a summary with a ``result_url`` the
receiver fetches with its API key; deleting the job removes the file."""

from __future__ import annotations

import asyncio
import gzip
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp.test_utils import TestClient
from structlog.testing import capture_logs

from primaa.app import create_app
from primaa.appkeys import STORE
from primaa.fastjson import dumps
from primaa.jobs.model import Job, JobStatus
from primaa.jobs.storage import JobStore
from primaa.results.feature import summary_feature
from primaa.results.files import CHUNK_BYTES, ResultFiles, file_reference
from tests.conftest import CallbackReceiver, ImageServer, make_settings, wait_for_job

AppClient = TestClient[Any, Any]
MakeClient = Callable[..., Any]
KEY = "lims-2c7e9a4b1d3f5e6a8b0c2d4e6f8a0b1c"
#: Far below the ~2 kB of a nucleus result on the synthetic image: every result is large.
LOW = {"result_inline_max_bytes": 512, "callback_max_result_bytes": 512}


async def _service(
    aiohttp_client: MakeClient,
    data_dir: Path,
    headers: dict[str, str] | None = None,
    **overrides: Any,
) -> AppClient:
    """The service, and a client of it sending ``headers`` with every request."""
    settings = make_settings(data_dir, **overrides)
    client: AppClient = await aiohttp_client(create_app(settings), headers=headers)
    return client


async def _completed(client: AppClient, image_server: ImageServer, **body: Any) -> str:
    response = await client.post(
        "/jobs",
        json={
            "image_url": image_server.url("/tile.png"),
            "algorithm_name": "poi_detection",
            **body,
        },
    )
    assert response.status == 202, await response.text()
    job_id: str = (await response.json())["job_id"]
    done = await wait_for_job(client, job_id)
    assert done["status"] == "Completed", done
    return job_id


def _result_files(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "results").glob("*.geojson.gz"))


def _without_job_id(document: dict[str, Any]) -> dict[str, Any]:
    """A result with what differs between two runs of one job taken out."""
    document = dict(document)
    if "properties" in document:
        document["properties"] = {
            k: v for k, v in document["properties"].items() if k not in {"job_id", "view"}
        }
    for feature in document.get("features", []):
        feature.pop("id")
    return document


async def test_a_large_result_is_served_as_a_small_one_is(
    aiohttp_client: MakeClient, tmp_path: Path, image_server: ImageServer
) -> None:
    small = await _service(aiohttp_client, tmp_path / "small")
    large = await _service(aiohttp_client, tmp_path / "large", **LOW)
    small_id = await _completed(small, image_server)
    large_id = await _completed(large, image_server)
    assert _result_files(tmp_path / "small") == []
    (file,) = _result_files(tmp_path / "large")
    assert file.name.startswith(large_id)

    expected = await (await small.get(f"/jobs/{small_id}/result")).json()
    assert len(expected["geometry"]["coordinates"]) > 3

    zipped = await large.get(f"/jobs/{large_id}/result", headers={"Accept-Encoding": "gzip"})
    assert zipped.status == 200
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert zipped.content_type == "application/geo+json"
    assert zipped.headers["X-Request-ID"]
    served = await zipped.json()
    assert _without_job_id(served) == _without_job_id(expected)

    plain = await large.get(f"/jobs/{large_id}/result", headers={"Accept-Encoding": "identity"})
    assert plain.status == 200
    assert "Content-Encoding" not in plain.headers
    assert await plain.read() == dumps(served), "decompressed on the way: the same bytes"

    # The stored gzip goes out as it is, not compressed again.
    async with aiohttp.ClientSession(auto_decompress=False) as raw:
        url = large.make_url(f"/jobs/{large_id}/result")
        async with raw.get(url, headers={"Accept-Encoding": "gzip, deflate"}) as response:
            assert await response.read() == file.read_bytes()
            assert response.headers["Content-Length"] == str(file.stat().st_size)
    assert gzip.decompress(file.read_bytes()) == dumps(served)

    for query in ("?format=qupath", "?bbox=0,0,80,60", "?bbox=0,0,80,60&format=qupath"):
        small_answer = await small.get(f"/jobs/{small_id}/result{query}")
        large_answer = await large.get(f"/jobs/{large_id}/result{query}")
        assert (small_answer.status, large_answer.status) == (200, 200), query
        assert _without_job_id(await large_answer.json()) == _without_job_id(
            await small_answer.json()
        ), query


async def test_the_callback_of_a_large_result_links_to_it_for_the_receivers_key(
    aiohttp_client: MakeClient,
    tmp_path: Path,
    image_server: ImageServer,
    callback_receiver: CallbackReceiver,
) -> None:
    headers = {"X-API-Key": KEY}
    client = await _service(aiohttp_client, tmp_path / "data", headers, api_keys=(KEY,), **LOW)
    job_id = await _completed(client, image_server, callback_url=callback_receiver.url)
    body = (await callback_receiver.next()).body

    assert body["type"] == "Feature"
    assert body["geometry"] is None
    properties = body["properties"]
    assert properties["job_id"] == job_id
    assert properties["status"] == "Completed"
    assert properties["measurements"]["count"] > 3
    assert "object_measurements" not in properties
    result_url = properties["result_url"]
    assert result_url == str(client.make_url(f"/jobs/{job_id}/result"))

    async with aiohttp.ClientSession() as receiver:
        async with receiver.get(result_url) as refused:
            assert refused.status == 401
        async with receiver.get(result_url, headers=headers) as fetched:
            assert fetched.status == 200
            feature = await fetched.json(content_type=None)
    assert feature["properties"]["measurements"] == properties["measurements"]
    assert len(feature["geometry"]["coordinates"]) == properties["measurements"]["count"]


async def test_result_url_is_made_from_public_url_when_set(
    aiohttp_client: MakeClient,
    tmp_path: Path,
    image_server: ImageServer,
    callback_receiver: CallbackReceiver,
) -> None:
    client = await _service(
        aiohttp_client, tmp_path / "data", public_url="https://primaa.example.org/api/", **LOW
    )
    job_id = await _completed(client, image_server, callback_url=callback_receiver.url)
    body = (await callback_receiver.next()).body
    assert body["properties"]["result_url"] == (
        f"https://primaa.example.org/api/jobs/{job_id}/result"
    )


async def test_a_callback_under_the_limit_carries_the_whole_result(
    aiohttp_client: MakeClient,
    tmp_path: Path,
    image_server: ImageServer,
    callback_receiver: CallbackReceiver,
) -> None:
    client = await _service(aiohttp_client, tmp_path / "data", result_inline_max_bytes=512)
    job_id = await _completed(client, image_server, callback_url=callback_receiver.url)
    body = (await callback_receiver.next()).body
    assert "result_url" not in body["properties"]
    assert body == await (await client.get(f"/jobs/{job_id}/result")).json()


async def test_deleting_a_job_removes_its_result_file(
    aiohttp_client: MakeClient, tmp_path: Path, image_server: ImageServer
) -> None:
    data_dir = tmp_path / "data"
    client = await _service(aiohttp_client, data_dir, **LOW)
    job_id = await _completed(client, image_server)
    assert (await client.get(f"/jobs/{job_id}/result?bbox=0,0,10,10")).status == 200
    assert len(_result_files(data_dir)) == 1

    deleted = await client.delete(f"/jobs/{job_id}")
    assert deleted.status == 204
    assert _result_files(data_dir) == []
    assert list((data_dir / "spool" / "kept").glob(f"{job_id}*")) == []
    for path in (
        f"/jobs/{job_id}",
        f"/jobs/{job_id}/result",
        f"/jobs/{job_id}/result?bbox=0,0,9,9",
    ):
        gone = await client.get(path)
        assert gone.status == 404, path
        assert (await gone.json())["type"] == "not_found"
    again = await client.delete(f"/jobs/{job_id}")
    assert again.status == 404


async def test_an_unfinished_job_cannot_be_deleted(
    aiohttp_client: MakeClient, tmp_path: Path, image_server: ImageServer
) -> None:
    client = await _service(aiohttp_client, tmp_path / "data")
    response = await client.post(
        "/jobs",
        json={
            "image_url": image_server.url("/tile.png"),
            "algorithm_name": "test_sleep",
            "parameters": {"seconds": 30},
        },
    )
    job_id = (await response.json())["job_id"]
    refused = await client.delete(f"/jobs/{job_id}")
    assert refused.status == 409
    assert (await refused.json())["type"] == "cannot_delete"
    assert (await client.get(f"/jobs/{job_id}")).status == 200
    await client.post(f"/jobs/{job_id}/cancel")


async def test_a_result_of_many_chunks_streams_and_a_client_may_leave_midway(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    client = await _service(aiohttp_client, data_dir, **LOW)
    store = client.app[STORE]
    coordinates = [[float(i % 5000), float(i // 5000)] for i in range(300_000)]
    document = {
        "type": "Feature",
        "geometry": {"type": "MultiPoint", "coordinates": coordinates},
        "properties": {"job_id": "big", "measurements": {"count": len(coordinates)}},
    }
    encoded = dumps(document)
    await _store_large_result(store, data_dir, "big", encoded)

    plain = await client.get("/jobs/big/result", headers={"Accept-Encoding": "identity"})
    assert await plain.read() == encoded
    assert len(encoded) > 8 * CHUNK_BYTES

    with capture_logs() as logs:
        async with aiohttp.ClientSession() as leaving:
            url = client.make_url("/jobs/big/result")
            async with leaving.get(url, headers={"Accept-Encoding": "identity"}) as response:
                await response.content.readexactly(CHUNK_BYTES // 2)
        deadline = time.monotonic() + 20
        while not any(e["event"] == "request" for e in logs):
            assert time.monotonic() < deadline, logs
            await asyncio.sleep(0.05)
    assert [e for e in logs if e["log_level"] in {"error", "critical"}] == []
    # The service goes on serving.
    assert (await client.get("/jobs/big")).status == 200


async def _store_large_result(store: JobStore, data_dir: Path, job_id: str, encoded: bytes) -> Path:
    """A completed job whose result is in a file, as a run would leave it (without a run)."""
    files = ResultFiles(data_dir / "results")
    name = files.write(job_id, encoded)
    summary = summary_feature(orjson.loads(encoded))
    await store.create(Job(job_id=job_id, algorithm="poi_detection", parameters={}))
    (running,) = await store.claim(lease_owner="test", lease_seconds=60, limit=1, now=time.time())
    done = running.moved_to(JobStatus.COMPLETED)
    reference = file_reference(summary, name, len(encoded))
    await store.finish(done, expected=JobStatus.RUNNING, result=reference)
    return files.path(name)


async def test_a_result_file_missing_here_is_a_500_naming_data_dir(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    client = await _service(aiohttp_client, tmp_path / "data")
    document = {"type": "Feature", "geometry": None, "properties": {"job_id": "lost"}}
    path = await _store_large_result(client.app[STORE], tmp_path / "data", "lost", dumps(document))
    assert (await client.get("/jobs/lost/result")).status == 200
    path.unlink()
    for query in ("", "?format=qupath", "?bbox=0,0,1,1"):
        answer = await client.get(f"/jobs/lost/result{query}")
        assert answer.status == 500, query
        body = await answer.json()
        assert body["type"] == "result_unavailable"
        assert "data_dir" in body["error"]
