""":class:`AsyncClient` against the real app on a loopback port: every operation."""

from __future__ import annotations

import asyncio
import datetime
import io
import json
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from primaa.client import (
    AsyncClient,
    Conflict,
    InvalidRequest,
    Job,
    NotFound,
    WaitTimeout,
)
from tests.conftest import CallbackReceiver, ImageServer, synthetic_he_png


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


@pytest.mark.parametrize("kind", ["path", "bytes", "file"])
async def test_submit_uploads(api: AsyncClient, he_png: Path, kind: str) -> None:
    image = {"path": he_png, "bytes": synthetic_he_png(), "file": io.BytesIO(synthetic_he_png())}
    job = await api.submit("test_sleep", image=image[kind], parameters={"seconds": 0})
    final = await api.wait(job.job_id, poll_interval=0.05, timeout=20)
    assert final.ok, final.error
    result = await api.result(job.job_id)
    height, width = 120, 160
    assert result["properties"]["measurements"]["width"] == width
    assert result["properties"]["measurements"]["height"] == height
    if kind == "file":
        # The caller's file is theirs: read, not closed.
        assert not image["file"].closed  # type: ignore[union-attr]


async def test_submit_needs_exactly_one_image(api: AsyncClient, he_png: Path) -> None:
    with pytest.raises(ValueError, match="either"):
        await api.submit("test_sleep")
    with pytest.raises(ValueError, match="either"):
        await api.submit("test_sleep", image_url="http://127.0.0.1/x.png", image=he_png)


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
    await api.wait(job.job_id, poll_interval=0.05, timeout=20)
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


async def test_wait_accepts_a_coroutine_callback(api: AsyncClient, he_png: Path) -> None:
    job = await api.submit("test_sleep", image=he_png, parameters={"seconds": 0})
    statuses: list[str] = []

    async def record(job: Job) -> None:
        await asyncio.sleep(0)
        statuses.append(job.status)

    await api.wait(job.job_id, poll_interval=0.05, timeout=20, on_progress=record)
    assert statuses[-1] == "Completed"


async def test_wait_times_out_with_the_last_state(api: AsyncClient, he_png: Path) -> None:
    job = await api.submit("test_sleep", image=he_png, parameters={"seconds": 30, "steps": 300})
    started = asyncio.get_running_loop().time()
    with pytest.raises(WaitTimeout) as caught:
        await api.wait(job.job_id, timeout=0.5, poll_interval=0.1)
    assert 0.5 <= asyncio.get_running_loop().time() - started < 3
    assert isinstance(caught.value, TimeoutError)
    assert caught.value.job.job_id == job.job_id
    assert caught.value.job.status in {"Pending", "Running"}
    await api.cancel(job.job_id)


async def test_cancel(api: AsyncClient, he_png: Path) -> None:
    job = await api.submit("test_sleep", image=he_png, parameters={"seconds": 30, "steps": 300})
    answer = await api.cancel(job.job_id)
    assert answer.cancel_requested or answer.status == "Cancelled"
    final = await api.wait(job.job_id, timeout=20, poll_interval=0.05)
    assert final.status == "Cancelled"
    assert final.done
    assert not final.ok
    with pytest.raises(Conflict) as caught:
        await api.result(job.job_id)
    assert caught.value.type == "no_result"


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


async def test_failed_result_leaves_no_file(api: AsyncClient, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    target = tmp_path / "out" / "result.geojson"
    with pytest.raises(NotFound):
        await api.result("no-such-job", to=target)
    assert list(target.parent.iterdir()) == []


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


async def test_redeliver_without_callback_is_a_conflict(api: AsyncClient, he_png: Path) -> None:
    job = await api.submit("test_sleep", image=he_png, parameters={"seconds": 0})
    await api.wait(job.job_id, poll_interval=0.05, timeout=20)
    with pytest.raises(Conflict) as caught:
        await api.redeliver(job.job_id)
    assert caught.value.status == 409
    assert caught.value.type == "cannot_redeliver"


async def test_algorithms(api: AsyncClient) -> None:
    names = {a["name"] for a in await api.algorithms()}
    assert {"poi_detection", "roi_detection", "test_sleep"} <= names
    detail = await api.algorithm("poi_detection")
    assert "sensitivity" in detail["parameters"]["properties"]
    with pytest.raises(NotFound):
        await api.algorithm("no_such_algorithm")


async def test_client_can_be_closed_without_a_block(app_server: TestServer) -> None:
    client = AsyncClient(str(app_server.make_url("/")))
    assert [a["name"] for a in await client.algorithms()]
    await client.close()
    await client.close()


async def test_a_uploaded_file_object_is_sent_from_where_it_stands(api: AsyncClient) -> None:
    stream = io.BytesIO(b"header to skip" + synthetic_he_png())
    stream.seek(len(b"header to skip"))
    job = await api.submit("test_sleep", image=stream, parameters={"seconds": 0})
    assert (await api.wait(job.job_id, poll_interval=0.05, timeout=20)).ok


async def test_invalid_parameters_are_invalid_request(api: AsyncClient, he_png: Path) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await api.submit("poi_detection", image=he_png, parameters={"sensitivity": 7})
    error = caught.value
    assert error.status == 422
    assert error.type == "invalid_parameters"
    assert "sensitivity" in error.details["parameters"]
    assert error.request_id
    assert error.body["code"] == 422
