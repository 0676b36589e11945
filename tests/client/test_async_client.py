""":class:`AsyncClient` against the real app on a loopback port: every operation."""

from __future__ import annotations

import asyncio
import datetime
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from primaa.app import create_app
from primaa.client import (
    AsyncClient,
    Conflict,
    Job,
    NotFound,
    WaitTimeout,
)
from tests.conftest import CallbackReceiver, ImageServer, make_settings, synthetic_he_png


async def test_submit_by_url_then_get(api: AsyncClient, image_server: ImageServer) -> None:
    job = await api.submit(
        "test_sleep", image_url=image_server.url("/tile.png"), parameters={"seconds": 0.1}
    )
    assert isinstance(job, Job)
    assert job.status == "Pending"
    assert job.algorithm_name == "test_sleep"
    assert job.parameters["seconds"] == 0.1
    assert job.image_url == image_server.url("/tile.png")
    assert isinstance(job.created_at, datetime.datetime)
    assert job.created_at.tzinfo is not None
    assert not job.done
    again = await api.get(job.job_id)
    assert again.job_id == job.job_id
    # Fields the class does not name are kept: the service adds some over time.
    assert again.raw["links"]["self"] == f"/jobs/{job.job_id}"


async def test_submit_uploads(api: AsyncClient, he_png: Path) -> None:
    """A path, bytes, and file objects, sent from where they stand and left open."""
    offset = b"header to skip"
    stream = io.BytesIO(offset + synthetic_he_png())
    stream.seek(len(offset))
    images = [he_png, synthetic_he_png(), io.BytesIO(synthetic_he_png()), stream]
    jobs = [await api.submit("test_sleep", image=i, parameters={"seconds": 0}) for i in images]
    for job in jobs:
        final = await api.wait(job.job_id, poll_interval=0.05, timeout=20)
        assert final.ok, final.error
        result = await api.result(job.job_id)
        assert result["properties"]["measurements"]["width"] == 160
        assert result["properties"]["measurements"]["height"] == 120
    assert not stream.closed


async def test_submit_needs_exactly_one_image(he_png: Path) -> None:
    async with AsyncClient("http://127.0.0.1:9") as client:
        with pytest.raises(ValueError, match="either"):
            await client.submit("test_sleep")
        with pytest.raises(ValueError, match="either"):
            await client.submit("test_sleep", image_url="http://127.0.0.1/x.png", image=he_png)


async def test_list_follows_cursors_across_pages(api: AsyncClient, he_png: Path) -> None:
    png = synthetic_he_png()
    submitted = [(await api.submit("test_sleep", image=png)).job_id for _ in range(5)]
    other = await api.submit("test_async", image=png)

    first, cursor = await api.page(algorithm="test_sleep", limit=2)
    assert len(first) == 2
    assert cursor is not None

    listed = [job.job_id async for job in api.list(algorithm="test_sleep", limit=2)]
    assert listed == list(reversed(submitted))  # newest first, all three pages
    everything = {job.job_id async for job in api.list(limit=4)}
    assert everything == {*submitted, other.job_id}


async def test_list_filters_by_status(api: AsyncClient, he_png: Path) -> None:
    job = await api.submit("test_sleep", image=he_png, parameters={"seconds": 0})
    statuses: list[str] = []

    async def record(job: Job) -> None:  # a coroutine callback is awaited
        await asyncio.sleep(0)
        statuses.append(job.status)

    await api.wait(job.job_id, poll_interval=0.05, timeout=20, on_progress=record)
    assert statuses[-1] == "Completed"
    assert [j.job_id async for j in api.list(status="Completed")] == [job.job_id]
    assert [j.job_id async for j in api.list(status="Failed")] == []


async def test_wait_reports_progress_until_final(api: AsyncClient, he_png: Path) -> None:
    job = await api.submit("test_sleep", image=he_png, parameters={"seconds": 1.5, "steps": 6})
    seen: list[Job] = []
    final = await api.wait(job.job_id, poll_interval=0.05, timeout=20, on_progress=seen.append)
    assert final.ok
    assert final.done
    assert final.progress_percent == 100
    assert seen[-1].status == "Completed"
    percents = [j.progress_percent for j in seen]
    assert percents == sorted(percents)
    # Reported once per change, not once per poll (about 30 polls here).
    states = [(j.status, j.progress_percent) for j in seen]
    assert len(states) == len(set(states))
    assert any(0 < p < 100 for p in percents), percents


async def test_wait_times_out_then_cancel(api: AsyncClient, he_png: Path) -> None:
    job = await api.submit("test_sleep", image=he_png, parameters={"seconds": 30, "steps": 300})
    started = asyncio.get_running_loop().time()
    with pytest.raises(WaitTimeout) as caught:
        await api.wait(job.job_id, timeout=0.5, poll_interval=0.1)
    assert 0.5 <= asyncio.get_running_loop().time() - started < 3
    assert isinstance(caught.value, TimeoutError)
    assert caught.value.job.job_id == job.job_id
    assert caught.value.job.status in {"Pending", "Running"}

    answer = await api.cancel(job.job_id)
    assert answer.cancel_requested or answer.status == "Cancelled"
    final = await api.wait(job.job_id, timeout=20, poll_interval=0.05)
    assert final.status == "Cancelled"
    assert final.done
    assert not final.ok
    with pytest.raises(Conflict) as no_result:
        await api.result(job.job_id)
    assert no_result.value.type == "no_result"


async def test_result_streams_to_a_file(api: AsyncClient, he_png: Path, tmp_path: Path) -> None:
    job = await api.submit("test_sleep", image=he_png, parameters={"seconds": 0})
    await api.wait(job.job_id, poll_interval=0.05, timeout=20)
    target = tmp_path / "out" / "result.geojson"
    target.parent.mkdir()
    written = await api.result(job.job_id, to=target)
    assert written == target
    assert json.loads(target.read_text()) == await api.result(job.job_id)
    assert not target.with_name("result.geojson.part").exists()

    qupath = await api.result(job.job_id, format="qupath", to=str(tmp_path / "q.geojson"))
    assert json.loads(qupath.read_text())["type"] == "FeatureCollection"

    missing = tmp_path / "out" / "missing.geojson"
    with pytest.raises(NotFound):
        await api.result("no-such-job", to=missing)
    assert sorted(p.name for p in target.parent.iterdir()) == ["result.geojson"]

    with pytest.raises(Conflict) as no_callback:
        await api.redeliver(job.job_id)
    assert no_callback.value.status == 409
    assert no_callback.value.type == "cannot_redeliver"


async def test_a_large_result_arrives_whole_then_the_job_is_deleted(
    aiohttp_server: Callable[..., Any], tmp_path: Path, he_png: Path
) -> None:
    settings = make_settings(tmp_path / "data", result_inline_max_bytes=0)
    server: TestServer = await aiohttp_server(create_app(settings))
    async with AsyncClient(str(server.make_url(""))) as api:
        job = await api.submit("poi_detection", image=he_png)
        await api.wait(job.job_id, poll_interval=0.05, timeout=30)
        feature = await api.result(job.job_id)
        assert (
            len(feature["geometry"]["coordinates"])
            == feature["properties"]["measurements"]["count"]
        )
        written = await api.result(job.job_id, to=tmp_path / "large.geojson")
        assert json.loads(written.read_text()) == feature, "decompressed on the way to the file"
        (stored,) = (tmp_path / "data" / "results").iterdir()

        await api.delete(job.job_id)
        assert not stored.exists()
        with pytest.raises(NotFound):
            await api.get(job.job_id)

        running = await api.submit("test_sleep", image=he_png, parameters={"seconds": 30})
        with pytest.raises(Conflict) as unfinished:
            await api.delete(running.job_id)
        assert unfinished.value.type == "cannot_delete"
        await api.cancel(running.job_id)


async def test_redeliver_sends_a_new_message(
    api: AsyncClient, image_server: ImageServer, callback_receiver: CallbackReceiver
) -> None:
    job = await api.submit(
        "test_sleep",
        image_url=image_server.url("/tile.png"),
        parameters={"seconds": 0},
        callback_url=callback_receiver.url,
        callback_token="t0ken",
    )
    first = await callback_receiver.next()
    assert first.headers["Authorization"] == "Bearer t0ken"
    redelivered = await api.redeliver(job.job_id)
    assert redelivered.callback is not None
    assert redelivered.callback["delivery_id"] != first.headers["webhook-id"]
    second = await callback_receiver.next()
    assert second.headers["webhook-id"] == redelivered.callback["delivery_id"]
    assert second.body == first.body


async def test_algorithms_and_closing_without_a_block(app_server: TestServer) -> None:
    client = AsyncClient(str(app_server.make_url("/")))
    names = {a["name"] for a in await client.algorithms()}
    assert {"poi_detection", "roi_detection", "test_sleep"} <= names
    detail = await client.algorithm("poi_detection")
    assert "sensitivity" in detail["parameters"]["properties"]
    with pytest.raises(NotFound):
        await client.algorithm("no_such_algorithm")
    await client.close()
    await client.close()
