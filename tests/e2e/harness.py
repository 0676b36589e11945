"""Run ``primaa serve`` as an operator does: a real process, signalled, killed, restarted.

A :class:`PrimaaServer` starts ``python -m primaa.cli serve`` in its own session (so
the service and its worker processes form one process group that teardown kills
whatever happened) and stops it with SIGTERM/SIGINT (graceful) or SIGKILL of the
whole group (a crash, a power cut). Helpers talk to it over HTTP.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.env import REPO, child_env

TEST_PLUGINS = "tests.support.algorithms"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0

JSON = dict[str, Any]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def live_group_members(pgid: int) -> set[int]:
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


async def eventually(check: Callable[[], bool], what: str, within: float = 10.0) -> None:
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
    workers: int = 1
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
        env = child_env(
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
            str(self.workers),
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

    async def terminate(self, signum: signal.Signals = signal.SIGTERM) -> int:
        """SIGTERM to the service alone, as a process manager sends it; its exit code."""
        self.send(signum)
        return await self.wait_exit()

    def send(self, signum: signal.Signals) -> None:
        """Send a signal to the service process alone (not its workers)."""
        assert self.process is not None
        self.process.send_signal(signum)

    async def wait_exit(self, within: float = STOP_TIMEOUT) -> int:
        """The exit code, once the service exits; fail (and kill it) after ``within`` s."""
        assert self.process is not None
        try:
            return await asyncio.wait_for(self.process.wait(), within)
        except TimeoutError:
            await self.kill()
            pytest.fail(f"primaa serve still running after {within} s:\n{self.log_text()}")

    def rss_kib(self) -> int:
        """Resident memory of the service process (not its workers), from ``/proc``."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS in /proc status")

    async def kill(self) -> None:
        """SIGKILL the service and every process it started (its session's group); reap it."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT)


def client(server: PrimaaServer) -> aiohttp.ClientSession:
    # No keep-alive: a connection must not outlive the server process it was opened to.
    return aiohttp.ClientSession(
        server.url,
        connector=aiohttp.TCPConnector(force_close=True),
        timeout=aiohttp.ClientTimeout(total=10),
    )


async def get_json(http: aiohttp.ClientSession, path: str, status: int = 200) -> JSON:
    async with http.get(path) as response:
        body: JSON = await response.json()
        assert response.status == status, body
        return body


async def submit_legacy(http: aiohttp.ClientSession, submission: JSON) -> str:
    async with http.post("/job-submission", json=submission) as response:
        body: JSON = await response.json()
        assert response.status == 200, body
    assert body["status"] == "Pending"
    assert body["error"] is None
    job_id: str = body["job_id"]
    return job_id


async def wait_job(
    http: aiohttp.ClientSession,
    job_id: str,
    done: Callable[[JSON], bool],
    what: str,
    within: float = 20.0,
) -> JSON:
    """Poll ``GET /jobs/{id}`` until ``done(job)``."""
    deadline = time.monotonic() + within
    while True:
        job = await get_json(http, f"/jobs/{job_id}")
        if done(job):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} not {what} after {within} s: {job}")
        await asyncio.sleep(0.05)


def delivered(job: JSON) -> bool:
    return job["callback"] is not None and job["callback"]["state"] == "Delivered"
