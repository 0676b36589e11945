"""SIGTERM/SIGINT drain a real ``primaa serve``: refuse new work with 503, finish or hand back.

The service keeps listening while it drains, so a load balancer sees ``/health`` turn
503 ``draining`` and clients get a 503 with ``Retry-After`` instead of a refused
connection; reads keep working; the running job finishes within the grace; a job that
never started stays Pending; a job still running when the grace ends goes back to
Pending without counting an attempt; the process exits 0.
"""

from __future__ import annotations

import signal
import sqlite3
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import CallbackReceiver, ImageServer
from tests.e2e.harness import JSON, TEST_PLUGINS, PrimaaServer, client, get_json, wait_job

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform == "win32", reason="uses POSIX signals and process groups"),
]


def _stored(data_dir: Path, job_id: str) -> tuple[str, int]:
    """Status and attempts of a job, read from the database of a stopped service."""
    with sqlite3.connect(data_dir / "primaa.sqlite3") as db:
        row = db.execute("SELECT status, attempts FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
    assert row is not None, job_id
    return str(row[0]), int(row[1])


async def _post_job(http: aiohttp.ClientSession, submission: JSON) -> str:
    async with http.post("/jobs", json=submission) as response:
        body: JSON = await response.json()
        assert response.status == 202, body
    job_id: str = body["job_id"]
    return job_id


def _sleep_job(image_server: ImageServer, seconds: float, callback: str | None = None) -> JSON:
    return {
        "image_url": image_server.url("/tile.png"),
        "algorithm_name": "test_sleep",
        "parameters": {"seconds": seconds, "steps": 20},
        "callback_url": callback,
    }


async def test_sigterm_drains_then_exits_0(
    primaa_server: PrimaaServer, image_server: ImageServer, callback_receiver: CallbackReceiver
) -> None:
    primaa_server.extra_env.update(
        {"PRIMAA_PLUGINS": TEST_PLUGINS, "PRIMAA_SHUTDOWN_GRACE_SECONDS": "10"}
    )
    await primaa_server.start()
    async with client(primaa_server) as http:
        running = await _post_job(http, _sleep_job(image_server, 3, callback_receiver.url))
        await wait_job(http, running, lambda j: j["progress"] > 0, "running with progress")
        waiting = await _post_job(http, _sleep_job(image_server, 0.5))

        primaa_server.send(signal.SIGTERM)
        signalled = time.monotonic()
        async with http.get("/health") as response:
            health = await response.json()
            # The signal may take a moment to land: poll until the service says so.
            while health["status"] != "draining" and time.monotonic() - signalled < 2:
                async with http.get("/health") as again:
                    response, health = again, await again.json()
            assert response.status == 503, health
            assert health["status"] == "draining"
        for path, body in (
            ("/jobs", _sleep_job(image_server, 0.1)),
            (
                "/job-submission",
                {"image_url": image_server.url("/tile.png"), "algorithm_name": "test_sleep"},
            ),
        ):
            async with http.post(path, json=body) as response:
                refused = await response.json()
                assert response.status == 503, refused
                assert refused["code"] == 503
                assert refused["type"] == "shutting_down"
                assert int(response.headers["Retry-After"]) > 0
        # Reads keep working during the drain.
        during = await get_json(http, f"/jobs/{running}")
        assert during["status"] == "Running"
        listing = await get_json(http, "/jobs")
        assert {j["job_id"] for j in listing["jobs"]} == {running, waiting}
        refused_at = time.monotonic()

    code = await primaa_server.wait_exit(within=15)
    stopped = time.monotonic()
    assert code == 0, primaa_server.log_text()
    # The running job finished, its callback went out before the exit, and the job
    # that never started was handed back without an attempt.
    assert _stored(primaa_server.data_dir, running) == ("Completed", 1)
    assert _stored(primaa_server.data_dir, waiting) == ("Pending", 0)
    assert [c.body["properties"]["job_id"] for c in callback_receiver.received] == [running]
    print(
        f"\nSIGTERM -> exit: {stopped - signalled:.2f} s"
        f" (503s answered within {refused_at - signalled:.2f} s of the signal)"
    )

    await primaa_server.start()
    async with client(primaa_server) as http:
        done = await wait_job(http, waiting, lambda j: j["status"] == "Completed", "Completed")
        assert done["attempts"] == 1
        assert (await get_json(http, f"/jobs/{running}"))["attempts"] == 1
        assert (await get_json(http, "/health"))["status"] == "ok"
    assert len(callback_receiver.received) == 1


async def test_sigint_hands_back_a_job_still_running_when_the_grace_ends(
    primaa_server: PrimaaServer, image_server: ImageServer
) -> None:
    primaa_server.extra_env.update(
        {"PRIMAA_PLUGINS": TEST_PLUGINS, "PRIMAA_SHUTDOWN_GRACE_SECONDS": "0.5"}
    )
    await primaa_server.start()
    async with client(primaa_server) as http:
        job_id = await _post_job(http, _sleep_job(image_server, 4))
        await wait_job(http, job_id, lambda j: j["progress"] > 0, "running with progress")
    signalled = time.monotonic()
    assert await primaa_server.terminate(signal.SIGINT) == 0, primaa_server.log_text()
    took = time.monotonic() - signalled
    assert took < 8, f"the grace is 0.5 s but the service took {took:.1f} s to stop"
    assert _stored(primaa_server.data_dir, job_id) == ("Pending", 0)
    print(f"\nSIGINT with a 4 s job and a 0.5 s grace -> exit in {took:.2f} s, job Pending")

    await primaa_server.start()
    async with client(primaa_server) as http:
        done = await wait_job(
            http, job_id, lambda j: j["status"] == "Completed", "Completed", within=20
        )
        assert done["attempts"] == 1
