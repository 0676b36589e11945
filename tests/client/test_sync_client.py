"""The blocking :class:`Client` against ``primaa serve`` in a process of its own."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from primaa.client import Client, Job, NotFound, WaitTimeout
from tests.client.conftest import LiveService


def client_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "primaa-client"]


def test_submit_wait_result(live_service: LiveService, png_url: str, tmp_path: Path) -> None:
    progress: list[Job] = []
    with Client(live_service.url) as client:
        job = client.submit("test_sleep", image_url=png_url, parameters={"seconds": 0.6})
        assert client.get(job.job_id).job_id == job.job_id
        final = client.wait(job.job_id, poll_interval=0.05, timeout=20, on_progress=progress.append)
        assert final.ok
        assert progress[-1].status == "Completed"
        feature = client.result(job.job_id)
        assert feature["properties"]["job_id"] == job.job_id
        path = client.result(job.job_id, format="qupath", to=tmp_path / "r.geojson")
        assert json.loads(path.read_text())["type"] == "FeatureCollection"
        assert job.job_id in {j.job_id for j in client.list(limit=1)}
        assert "test_sleep" in {a["name"] for a in client.algorithms()}
        assert client.algorithm("test_sleep")["name"] == "test_sleep"


def test_upload_cancel_and_errors(live_service: LiveService, he_png: Path) -> None:
    with Client(live_service.url) as client:
        job = client.submit("test_sleep", image=he_png, parameters={"seconds": 30, "steps": 300})
        with pytest.raises(WaitTimeout):
            client.wait(job.job_id, timeout=0.3, poll_interval=0.1)
        client.cancel(job.job_id)
        assert client.wait(job.job_id, timeout=20, poll_interval=0.05).status == "Cancelled"
        with pytest.raises(NotFound):
            client.get("no-such-job")


def test_close_stops_the_thread(live_service: LiveService) -> None:
    before = len(client_threads())
    client = Client(live_service.url)
    assert len(client_threads()) == before + 1
    client.algorithms()
    client.close()
    client.close()
    assert len(client_threads()) == before
    with pytest.raises(RuntimeError, match="closed"):
        client.algorithms()


async def test_works_where_an_event_loop_already_runs(live_service: LiveService) -> None:
    """As in a notebook: the caller's loop is running, the client's is its own."""
    with Client(live_service.url) as client:
        assert client.algorithms()
