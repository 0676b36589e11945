"""Power cuts: SIGKILL the whole service (main process and workers) twice under load.

300 jobs are submitted; the process group is killed while some are done, some run
and most wait, restarted, killed again soon after, and restarted once more. Every
job must still reach a final state with its attempts bounded by ``max_attempts``, and
every job must be called back at least once, each callback keeping the delivery id
it was given (``webhook-id``) across retries and restarts.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import dataclasses
import sqlite3
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import TERMINAL, CallbackReceiver, ImageServer
from tests.e2e.harness import JSON, TEST_PLUGINS, PrimaaServer, client, get_json

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform == "win32", reason="uses POSIX signals and process groups"),
]

JOBS = 300
MAX_ATTEMPTS = 2
#: The receiver answers 500 to this many callbacks first, so some are retried.
REFUSED_CALLBACKS = 25


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """The database of a killed service: what was in flight when the power went."""

    statuses: collections.Counter[str]
    attempts: dict[str, int]
    deliveries: dict[str, list[str]]

    def line(self) -> str:
        return ", ".join(f"{status} {n}" for status, n in sorted(self.statuses.items()))


def _snapshot(data_dir: Path) -> Snapshot:
    with sqlite3.connect(data_dir / "primaa.sqlite3") as db:
        jobs = db.execute("SELECT job_id, status, attempts FROM jobs").fetchall()
        rows = db.execute("SELECT job_id, delivery_id FROM deliveries").fetchall()
    deliveries: dict[str, list[str]] = collections.defaultdict(list)
    for job_id, delivery_id in rows:
        deliveries[job_id].append(delivery_id)
    return Snapshot(
        statuses=collections.Counter(status for _, status, _ in jobs),
        attempts={job_id: attempts for job_id, _, attempts in jobs},
        deliveries=dict(deliveries),
    )


def _submission(n: int, image_server: ImageServer, callback_url: str) -> JSON:
    base: JSON = {"image_url": image_server.url("/tile.png"), "callback_url": callback_url}
    if n % 3 == 0:
        return base | {"algorithm_name": "poi_detection", "callback_token": f"t{n}"}
    seconds = 0.05 + (n % 5) * 0.025
    return base | {"algorithm_name": "test_sleep", "parameters": {"seconds": seconds, "steps": 2}}


async def _submit_all(http: aiohttp.ClientSession, submissions: list[JSON]) -> list[str]:
    limit = asyncio.Semaphore(24)

    async def one(submission: JSON) -> str:
        async with limit, http.post("/jobs", json=submission) as response:
            body: JSON = await response.json()
            assert response.status == 202, body
            job_id: str = body["job_id"]
            return job_id

    return list(await asyncio.gather(*(one(s) for s in submissions)))


async def _until(check: object, what: str, within: float) -> None:
    assert callable(check)
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} after {within} s")
        await asyncio.sleep(0.05)


def _called_back(receiver: CallbackReceiver) -> set[str]:
    return {c.body["properties"]["job_id"] for c in receiver.received}


async def test_power_cuts_lose_no_job_and_no_callback(
    primaa_server: PrimaaServer, image_server: ImageServer, callback_receiver: CallbackReceiver
) -> None:
    secret = "whsec_" + base64.b64encode(b"power-cut-test-signing-key-32byt").decode()
    primaa_server.workers = 2
    primaa_server.extra_env.update(
        {
            "PRIMAA_PLUGINS": TEST_PLUGINS,
            "PRIMAA_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
            "PRIMAA_WEBHOOK_SECRET": secret,
            "PRIMAA_WEBHOOK_RETRY_SCHEDULE": "0.2,0.5,1,1,1",
        }
    )
    callback_receiver.answers.extend([500] * REFUSED_CALLBACKS)
    started = time.monotonic()
    await primaa_server.start()
    submissions = [_submission(n, image_server, callback_receiver.url) for n in range(JOBS)]
    async with client(primaa_server) as http:
        job_ids = await _submit_all(http, submissions)
    assert len(set(job_ids)) == JOBS

    async def some_called_back() -> bool:
        return len(_called_back(callback_receiver)) >= 40

    await _until(some_called_back, "40 jobs called back", within=30)
    await primaa_server.kill()
    first = _snapshot(primaa_server.data_dir)

    await primaa_server.start()
    seen = len(_called_back(callback_receiver))

    async def progress_after_restart() -> bool:
        return len(_called_back(callback_receiver)) >= seen + 30

    await _until(progress_after_restart, "30 more jobs called back", within=30)
    await primaa_server.kill()
    second = _snapshot(primaa_server.data_dir)

    await primaa_server.start()
    async with client(primaa_server) as http:

        async def nothing_left() -> bool:
            for status in ("Pending", "Running"):
                page = await get_json(http, f"/jobs?status={status}&limit=1")
                if page["jobs"]:
                    return False
            return True

        async def everyone_called_back() -> bool:
            return _called_back(callback_receiver) >= set(job_ids)

        await _until(nothing_left, "every job final", within=40)
        await _until(everyone_called_back, "every job called back", within=20)
        jobs = [await get_json(http, f"/jobs/{job_id}") for job_id in job_ids]
    assert await primaa_server.terminate() == 0
    final = _snapshot(primaa_server.data_dir)
    elapsed = time.monotonic() - started

    # Every job is final, ran at most MAX_ATTEMPTS times, and failed only for that reason.
    outcomes = collections.Counter(job["status"] for job in jobs)
    assert set(outcomes) <= TERMINAL - {"Cancelled"}, outcomes
    for job in jobs:
        assert 1 <= job["attempts"] <= MAX_ATTEMPTS, job
        if job["status"] == "Failed":
            assert (
                job["error"]
                == f"gave up after {MAX_ATTEMPTS} attempts: the job's lease expired each time"
            ), job

    # Every job was called back; each job has one delivery whose id never changed.
    by_job: dict[str, list[str]] = collections.defaultdict(list)
    for callback in callback_receiver.received:
        by_job[callback.body["properties"]["job_id"]].append(callback.headers["webhook-id"])
    for job in jobs:
        delivery_id = job["callback"]["delivery_id"]
        assert job["callback"]["state"] == "Delivered", job["callback"]
        assert set(by_job[job["job_id"]]) == {delivery_id}, (job["job_id"], by_job[job["job_id"]])
        assert final.deliveries[job["job_id"]] == [delivery_id]
        for before in (first, second):
            if job["job_id"] in before.deliveries:
                assert before.deliveries[job["job_id"]] == [delivery_id]
        assert job["callback"]["attempts"][-1]["status_code"] == 200

    accepted = callback_receiver.received[REFUSED_CALLBACKS:]
    per_job = collections.Counter(c.body["properties"]["job_id"] for c in accepted)
    duplicates = sum(n - 1 for n in per_job.values())
    print(
        f"\n{JOBS} jobs, {MAX_ATTEMPTS} attempts at most, 2 workers, two SIGKILLs of the group"
        f"\nat kill 1: {first.line()}; deliveries written {len(first.deliveries)}"
        f"\nat kill 2: {second.line()}; deliveries written {len(second.deliveries)}"
        f"\nfinal: {', '.join(f'{s} {n}' for s, n in sorted(outcomes.items()))}"
        f"\ncallbacks: {len(callback_receiver.received)} received ({REFUSED_CALLBACKS} refused"
        f" with 500 and retried), {len(per_job)} jobs accepted, {duplicates} duplicates"
        f" (same webhook-id)\nwall time {elapsed:.1f} s"
    )
    assert len(per_job) == JOBS
