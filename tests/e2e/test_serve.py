"""``primaa serve`` as an operator runs it: a real process, stopped and restarted on its data.

Each test starts ``python -m primaa.cli serve`` in its own session (so the service and
its worker processes form one process group that teardown kills whatever happened),
talks to it over HTTP with the loopback image and callback servers of ``conftest``, and
stops it with SIGTERM (graceful) or SIGKILL of the whole group (a crash).
"""

from __future__ import annotations

import sys
import time

import aiohttp
import pytest

from tests.conftest import TERMINAL, CallbackReceiver, ImageServer
from tests.e2e.harness import (
    JSON,
    TEST_PLUGINS,
    PrimaaServer,
    client,
    delivered,
    eventually,
    get_json,
    live_group_members,
    submit_legacy,
    wait_job,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform == "win32", reason="uses POSIX signals and process groups"),
]


async def _walkthrough(
    http: aiohttp.ClientSession,
    image_server: ImageServer,
    callback_receiver: CallbackReceiver,
    token: str,
) -> tuple[str, JSON, float]:
    """The README's example: submit with the original API, get the callback, read it back.

    Returns the job id, the callback body and the seconds from submission to callback.
    """
    submitted_at = time.time()
    job_id = await submit_legacy(
        http,
        {
            "image_url": image_server.url("/tile.png"),
            "callback_url": callback_receiver.url,
            "callback_token": token,
            "algorithm_name": "poi_detection",
        },
    )
    callback = await callback_receiver.next(within=30)
    elapsed = callback.at - submitted_at

    assert callback.headers["Authorization"] == f"Bearer {token}"
    feature = callback.body
    assert feature["type"] == "Feature"
    assert feature["geometry"]["type"] == "MultiPoint"
    assert feature["geometry"]["coordinates"], "no nuclei in the synthetic H&E tile"
    assert feature["properties"]["job_id"] == job_id
    assert feature["properties"]["status"] == "Completed"
    assert feature["properties"]["algorithm_name"] == "poi_detection"

    assert await get_json(http, f"/status/{job_id}") == {
        "code": 200,
        "job_id": job_id,
        "status": "Completed",
        "error": None,
    }
    assert await get_json(http, f"/jobs/{job_id}/result") == feature
    await wait_job(http, job_id, delivered, "marked Delivered")
    return job_id, feature, elapsed


async def test_readme_walkthrough(
    primaa_server: PrimaaServer, image_server: ImageServer, callback_receiver: CallbackReceiver
) -> None:
    await primaa_server.start()
    async with client(primaa_server) as http:
        health = await get_json(http, "/health")
        assert health["status"] == "ok"
        assert "poi_detection" in health["algorithms"]

        _, _, cold = await _walkthrough(http, image_server, callback_receiver, "t0ken")
        _, _, warm = await _walkthrough(http, image_server, callback_receiver, "s3cond")
    print(f"\nsubmit -> callback, first job (worker process starting): {cold:.3f} s")
    print(f"submit -> callback, second job (worker warm): {warm:.3f} s")
    assert len(callback_receiver.received) == 2


async def test_graceful_restart_keeps_job_status_result_and_delivery(
    primaa_server: PrimaaServer, image_server: ImageServer, callback_receiver: CallbackReceiver
) -> None:
    await primaa_server.start()
    async with client(primaa_server) as http:
        job_id, feature, _ = await _walkthrough(http, image_server, callback_receiver, "t0ken")
        before = await get_json(http, f"/jobs/{job_id}")

    pgid = primaa_server.pid
    assert await primaa_server.terminate() == 0
    await eventually(lambda: not live_group_members(pgid), "worker processes gone", 5.0)

    await primaa_server.start()
    async with client(primaa_server) as http:
        assert await get_json(http, f"/status/{job_id}") == {
            "code": 200,
            "job_id": job_id,
            "status": "Completed",
            "error": None,
        }
        assert await get_json(http, f"/jobs/{job_id}/result") == feature
        after = await get_json(http, f"/jobs/{job_id}")
        assert after["callback"]["state"] == "Delivered"
        assert after["callback"]["delivery_id"] == before["callback"]["delivery_id"]
        assert len(after["callback"]["attempts"]) == 1
        assert after["callback"]["attempts"][0]["status_code"] == 200
        for key in ("status", "attempts", "created_at", "finished_at", "parameters", "image_url"):
            assert after[key] == before[key], key
        listing = await get_json(http, "/jobs")
        assert [job["job_id"] for job in listing["jobs"]] == [job_id]
    assert len(callback_receiver.received) == 1


async def test_crash_mid_job_then_restart_runs_the_job_again(
    primaa_server: PrimaaServer, image_server: ImageServer, callback_receiver: CallbackReceiver
) -> None:
    primaa_server.extra_env["PRIMAA_PLUGINS"] = TEST_PLUGINS
    await primaa_server.start()
    async with client(primaa_server) as http:
        job_id = await submit_legacy(
            http,
            {
                "image_url": image_server.url("/tile.png"),
                "callback_url": callback_receiver.url,
                "callback_token": "k",
                "algorithm_name": "test_sleep",
                "parameters": {"seconds": 3},
            },
        )
        running = await wait_job(
            http,
            job_id,
            lambda job: job["status"] == "Running" and job["progress"] > 0,
            "Running with some progress",
        )
    assert running["attempts"] == 1

    pgid = primaa_server.pid
    workers = live_group_members(pgid) - {pgid}
    assert workers, "no worker process in the service's process group"
    await primaa_server.kill()
    await eventually(lambda: not live_group_members(pgid), "all processes killed", 5.0)
    assert callback_receiver.received == []

    await primaa_server.start()
    async with client(primaa_server) as http:
        done = await wait_job(
            http, job_id, lambda job: job["status"] in TERMINAL, "finished", within=25
        )
        assert done["status"] == "Completed", done
        assert done["attempts"] == 2
        assert done["error"] is None
        callback = await callback_receiver.next(within=15)
        assert callback.headers["Authorization"] == "Bearer k"
        assert callback.body["properties"]["job_id"] == job_id
        assert callback.body["properties"]["status"] == "Completed"
        # It ran to the end in a new worker, not in one of the killed ones.
        ran_in = int(callback.body["properties"]["measurements"]["pid"])
        assert ran_in not in workers
        assert await get_json(http, f"/jobs/{job_id}/result") == callback.body
        await wait_job(http, job_id, delivered, "marked Delivered")
    assert len(callback_receiver.received) == 1
