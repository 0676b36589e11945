"""``primaa serve`` as an operator runs it: a real process, stopped and restarted on its data.

Each test starts ``python -m primaa.cli serve`` in its own session (so the service and
its worker processes form one process group that teardown kills whatever happened),
talks to it over HTTP with the loopback image and callback servers of ``conftest``, and
stops it with SIGTERM (graceful) or SIGKILL of the whole group (a crash).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import TERMINAL, CallbackReceiver, ImageServer

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform == "win32", reason="uses POSIX signals and process groups"),
]

REPO = Path(__file__).resolve().parents[2]
TEST_PLUGINS = "tests.support.algorithms"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0

JSON = dict[str, Any]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _live_group_members(pgid: int) -> set[int]:
    """Processes of group ``pgid`` that are not zombies (Linux ``/proc``)."""
    members = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        state, _ppid, pgrp = text[text.rindex(")") + 2 :].split()[:3]
        if int(pgrp) == pgid and state != "Z":
            members.add(int(stat.parent.name))
    return members


async def _eventually(check: Callable[[], bool], what: str, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"still not {what} after {within} s")
        await asyncio.sleep(0.05)


@dataclasses.dataclass
class PrimaaServer:
    """One service with its data directory and port, started and stopped as often as needed."""

    data_dir: Path
    log_dir: Path
    port: int
    extra_env: dict[str, str] = dataclasses.field(default_factory=dict)
    process: asyncio.subprocess.Process | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None, "the server was never started"
        return self.process.pid

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"server-{self.starts}.log"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def start(self) -> None:
        """Start ``primaa serve`` and return once ``GET /health`` answers 200."""
        assert self.process is None or self.process.returncode is not None, "already running"
        self.starts += 1
        env = {k: v for k, v in os.environ.items() if not k.startswith("PRIMAA_")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        env.update(
            {"PRIMAA_ALLOW_PRIVATE_URLS": "true", "PRIMAA_LOG_FORMAT": "json", **self.extra_env}
        )
        command = [
            sys.executable,
            "-m",
            "primaa.cli",
            "serve",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            "--workers",
            "1",
        ]
        with self.log_path.open("wb") as log:
            self.process = await asyncio.create_subprocess_exec(
                *command,
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        await self._wait_healthy()

    async def _wait_healthy(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT
        timeout = aiohttp.ClientTimeout(total=2)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                if self.process.returncode is not None:
                    pytest.fail(
                        f"primaa serve exited with {self.process.returncode} before answering"
                        f" /health; its output:\n{self.log_text()}"
                    )
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(f"{self.url}/health") as response:
                        if response.status == 200:
                            return
                if time.monotonic() > deadline:
                    await self.kill()
                    pytest.fail(
                        f"primaa serve did not answer /health within {START_TIMEOUT} s;"
                        f" its output:\n{self.log_text()}"
                    )
                await asyncio.sleep(0.05)

    async def terminate(self) -> int:
        """SIGTERM to the service alone, as a process manager sends it; its exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT)
        except TimeoutError:
            await self.kill()
            pytest.fail(
                f"primaa serve still running {STOP_TIMEOUT} s after SIGTERM:\n{self.log_text()}"
            )

    async def kill(self) -> None:
        """SIGKILL the service and every process it started (its session's group); reap it."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT)


@pytest.fixture
async def primaa_server(tmp_path: Path) -> AsyncIterator[PrimaaServer]:
    server = PrimaaServer(data_dir=tmp_path / "data", log_dir=tmp_path, port=_free_port())
    try:
        yield server
    finally:
        await server.kill()
        if server.process is not None:
            pgid = server.process.pid
            await _eventually(lambda: not _live_group_members(pgid), "all processes gone")


def _client(server: PrimaaServer) -> aiohttp.ClientSession:
    # No keep-alive: a connection must not outlive the server process it was opened to.
    return aiohttp.ClientSession(
        server.url,
        connector=aiohttp.TCPConnector(force_close=True),
        timeout=aiohttp.ClientTimeout(total=10),
    )


async def _get(http: aiohttp.ClientSession, path: str, status: int = 200) -> JSON:
    async with http.get(path) as response:
        body: JSON = await response.json()
        assert response.status == status, body
        return body


async def _submit(http: aiohttp.ClientSession, submission: JSON) -> str:
    async with http.post("/job-submission", json=submission) as response:
        body: JSON = await response.json()
        assert response.status == 200, body
    assert body["status"] == "Pending"
    assert body["error"] is None
    job_id: str = body["job_id"]
    return job_id


async def _wait_job(
    http: aiohttp.ClientSession,
    job_id: str,
    done: Callable[[JSON], bool],
    what: str,
    within: float = 20.0,
) -> JSON:
    """Poll ``GET /jobs/{id}`` until ``done(job)``."""
    deadline = time.monotonic() + within
    while True:
        job = await _get(http, f"/jobs/{job_id}")
        if done(job):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} not {what} after {within} s: {job}")
        await asyncio.sleep(0.05)


def _delivered(job: JSON) -> bool:
    return job["callback"] is not None and job["callback"]["state"] == "Delivered"


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
    job_id = await _submit(
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

    assert await _get(http, f"/status/{job_id}") == {
        "code": 200,
        "job_id": job_id,
        "status": "Completed",
        "error": None,
    }
    assert await _get(http, f"/jobs/{job_id}/result") == feature
    await _wait_job(http, job_id, _delivered, "marked Delivered")
    return job_id, feature, elapsed


async def test_readme_walkthrough(
    primaa_server: PrimaaServer, image_server: ImageServer, callback_receiver: CallbackReceiver
) -> None:
    await primaa_server.start()
    async with _client(primaa_server) as http:
        health = await _get(http, "/health")
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
    async with _client(primaa_server) as http:
        job_id, feature, _ = await _walkthrough(http, image_server, callback_receiver, "t0ken")
        before = await _get(http, f"/jobs/{job_id}")

    pgid = primaa_server.pid
    assert await primaa_server.terminate() == 0
    await _eventually(lambda: not _live_group_members(pgid), "worker processes gone", 5.0)

    await primaa_server.start()
    async with _client(primaa_server) as http:
        assert await _get(http, f"/status/{job_id}") == {
            "code": 200,
            "job_id": job_id,
            "status": "Completed",
            "error": None,
        }
        assert await _get(http, f"/jobs/{job_id}/result") == feature
        after = await _get(http, f"/jobs/{job_id}")
        assert after["callback"]["state"] == "Delivered"
        assert after["callback"]["delivery_id"] == before["callback"]["delivery_id"]
        assert len(after["callback"]["attempts"]) == 1
        assert after["callback"]["attempts"][0]["status_code"] == 200
        for key in ("status", "attempts", "created_at", "finished_at", "parameters", "image_url"):
            assert after[key] == before[key], key
        listing = await _get(http, "/jobs")
        assert [job["job_id"] for job in listing["jobs"]] == [job_id]
    assert len(callback_receiver.received) == 1


async def test_crash_mid_job_then_restart_runs_the_job_again(
    primaa_server: PrimaaServer, image_server: ImageServer, callback_receiver: CallbackReceiver
) -> None:
    primaa_server.extra_env["PRIMAA_PLUGINS"] = TEST_PLUGINS
    await primaa_server.start()
    async with _client(primaa_server) as http:
        job_id = await _submit(
            http,
            {
                "image_url": image_server.url("/tile.png"),
                "callback_url": callback_receiver.url,
                "callback_token": "k",
                "algorithm_name": "test_sleep",
                "parameters": {"seconds": 3},
            },
        )
        running = await _wait_job(
            http,
            job_id,
            lambda job: job["status"] == "Running" and job["progress"] > 0,
            "Running with some progress",
        )
    assert running["attempts"] == 1

    pgid = primaa_server.pid
    workers = _live_group_members(pgid) - {pgid}
    assert workers, "no worker process in the service's process group"
    await primaa_server.kill()
    await _eventually(lambda: not _live_group_members(pgid), "all processes killed", 5.0)
    assert callback_receiver.received == []

    await primaa_server.start()
    async with _client(primaa_server) as http:
        done = await _wait_job(
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
        assert await _get(http, f"/jobs/{job_id}/result") == callback.body
        await _wait_job(http, job_id, _delivered, "marked Delivered")
    assert len(callback_receiver.received) == 1
