"""Worker processes die with their service, and neither a Ctrl-C nor a plugin stops it.

``kill -9`` of the main process alone (a process manager that kills only the pid it
knows, an OOM kill of the service) must not leave its workers and the multiprocessing
resource tracker running as orphans: they would hold CPU and memory, and the jobs they
ran are run again by the restarted service anyway. A SIGINT sent to the whole
foreground process group (Ctrl-C) reaches the workers too: they must leave it to the
main process, which drains. A plugin that calls ``sys.exit`` fails its job only.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import ImageServer
from tests.e2e.harness import JSON, TEST_PLUGINS, PrimaaServer, client, wait_job

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform != "linux", reason="reads the process tree from /proc"),
]

#: The requirement: nothing of the killed service is alive this long after the kill.
ORPHAN_DEADLINE = 5.0

#: A process is identified by its pid and its start time, so a recycled pid is not it.
ProcessKey = tuple[int, int]


def _stat(pid: int) -> tuple[str, int, int] | None:
    """State, parent pid and start time (clock ticks since boot) of ``pid``, if it exists."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[19])


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def descendants(root: int) -> dict[ProcessKey, str]:
    """Every live process below ``root`` (children, recursively), with its command line."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        stat = _stat(int(entry.name))
        if stat is not None and stat[0] != "Z":
            children.setdefault(stat[1], []).append(int(entry.name))
    found: dict[ProcessKey, str] = {}
    pending = list(children.get(root, []))
    while pending:
        pid = pending.pop()
        stat = _stat(pid)
        if stat is not None:
            found[(pid, stat[2])] = _cmdline(pid)
        pending.extend(children.get(pid, []))
    return found


def alive(key: ProcessKey) -> bool:
    """Whether that very process still runs (a zombie is dead, only not yet reaped)."""
    stat = _stat(key[0])
    return stat is not None and stat[2] == key[1] and stat[0] not in ("Z", "X")


def _stored(data_dir: Path, job_id: str) -> tuple[str, int]:
    with sqlite3.connect(data_dir / "primaa.sqlite3") as db:
        row = db.execute("SELECT status, attempts FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
    assert row is not None, job_id
    return str(row[0]), int(row[1])


async def _post_sleep(
    http: aiohttp.ClientSession, image_server: ImageServer, seconds: float
) -> str:
    submission: JSON = {
        "image_url": image_server.url("/tile.png"),
        "algorithm_name": "test_sleep",
        "parameters": {"seconds": seconds, "steps": 20},
    }
    async with http.post("/jobs", json=submission) as response:
        body: JSON = await response.json()
        assert response.status == 202, body
    job_id: str = body["job_id"]
    return job_id


async def test_kill_9_of_the_service_alone_leaves_no_worker_and_the_restart_recovers_the_job(
    primaa_server: PrimaaServer, image_server: ImageServer
) -> None:
    primaa_server.workers = 2
    primaa_server.extra_env.update({"PRIMAA_PLUGINS": TEST_PLUGINS})
    await primaa_server.start()
    async with client(primaa_server) as http:
        job_id = await _post_sleep(http, image_server, 5)
        await wait_job(http, job_id, lambda j: j["progress"] > 0, "running with progress")
    below = descendants(primaa_server.pid)
    workers = [key for key, line in below.items() if "spawn_main" in line]
    trackers = [key for key, line in below.items() if "resource_tracker" in line]
    assert len(workers) == 2, below
    assert len(trackers) == 1, below

    primaa_server.send(signal.SIGKILL)
    assert await primaa_server.wait_exit() == -signal.SIGKILL
    killed = time.monotonic()
    survivors = list(below)
    while survivors and time.monotonic() - killed < ORPHAN_DEADLINE:
        await asyncio.sleep(0.05)
        survivors = [key for key in survivors if alive(key)]
    took = time.monotonic() - killed
    assert not survivors, {key: below[key] for key in survivors}
    print(f"\nkill -9 of the service: its {len(below)} processes gone within {took:.2f} s")

    await primaa_server.start()
    async with client(primaa_server) as http:
        done = await wait_job(
            http, job_id, lambda j: j["status"] == "Completed", "Completed", within=60
        )
    assert done["error"] is None


async def test_ctrl_c_to_the_process_group_drains_without_killing_a_worker(
    primaa_server: PrimaaServer, image_server: ImageServer
) -> None:
    primaa_server.workers = 2
    primaa_server.extra_env.update(
        {"PRIMAA_PLUGINS": TEST_PLUGINS, "PRIMAA_SHUTDOWN_GRACE_SECONDS": "10"}
    )
    await primaa_server.start()
    async with client(primaa_server) as http:
        job_id = await _post_sleep(http, image_server, 2)
        await wait_job(http, job_id, lambda j: j["progress"] > 0, "running with progress")
    # The service leads its own session: its process group is what a terminal's Ctrl-C hits.
    os.killpg(primaa_server.pid, signal.SIGINT)
    code = await primaa_server.wait_exit(within=15)
    output = primaa_server.log_text()
    assert code == 0, output
    assert "KeyboardInterrupt" not in output
    assert "Traceback" not in output
    assert "worker_died" not in output
    assert _stored(primaa_server.data_dir, job_id) == ("Completed", 1), output


async def test_an_algorithm_calling_sys_exit_fails_its_job_and_the_service_goes_on(
    primaa_server: PrimaaServer, image_server: ImageServer
) -> None:
    primaa_server.extra_env.update({"PRIMAA_PLUGINS": TEST_PLUGINS})
    await primaa_server.start()
    submission: JSON = {"image_url": image_server.url("/tile.png"), "algorithm_name": "test_exit"}
    async with client(primaa_server) as http, http.post("/jobs", json=submission) as response:
        body: JSON = await response.json()
        assert response.status == 202, body
    async with client(primaa_server) as http:
        failed = await wait_job(
            http, body["job_id"], lambda j: j["status"] in ("Failed", "Completed"), "final"
        )
        assert failed["status"] == "Failed"
        assert failed["error"] == "the algorithm tried to end its process (SystemExit: 3)"
        assert failed["attempts"] == 1
        after = await _post_sleep(http, image_server, 0.1)
        await wait_job(http, after, lambda j: j["status"] == "Completed", "Completed")
    assert "worker_died" not in primaa_server.log_text()
