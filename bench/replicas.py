"""Two replicas on one PostgreSQL database, one killed with SIGKILL in the middle of a load.

Each checkout measured (this one, and with ``--base DIR`` another, alternating)
gets a fresh database and two ``primaa serve`` replicas with one worker each. It
submits ``bench_sleep`` jobs to both in turn, kills one replica's main process
once a third of the callbacks are in, and waits for every callback. It prints:

* jobs called back, and callbacks received more than once (duplicates);
* the jobs the dead replica held (they ran more than once), and when the last of
  them started again, finished and was called back, counted from the kill;
* processes of the killed replica still alive 5 s after the kill (orphans);
* under the table, when the survivor requeued them (its ``jobs_requeued`` log
  lines) and the span of their claims (``started_at``) and ends (``finished_at``).

How soon an idle replica starts a job submitted to a busy one is
``bench/wakeups.py``'s measure.

    python -m bench.replicas [--quick] [--base DIR] [--postgres URL]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp

from bench.harness import (
    REPO,
    Process,
    group_pids,
    primaa_serve,
    print_table,
    scratch_dir,
)
from bench.loopback import Loopback, tiny_png
from tests.support.postgres import scratch_database

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PLUGIN_MODULE = "primaa_bench_replicas"


@contextlib.contextmanager
def replicas(
    repo: Path, database_url: str, plugin_dir: Path, tmp: Path, count: int = 2
) -> Iterator[list[Process]]:
    settings = {
        "PRIMAA_DATABASE_URL": database_url,
        "PRIMAA_PLUGINS": PLUGIN_MODULE,
        # This checkout's bench plugin, whichever primaa runs it.
        "PYTHONPATH": os.pathsep.join([str(repo), str(plugin_dir)]),
    }
    with contextlib.ExitStack() as stack:
        yield [
            stack.enter_context(
                primaa_serve(tmp / f"replica-{n}", workers=1, settings=settings, repo=repo)
            )
            for n in range(count)
        ]


async def _submit(
    http: aiohttp.ClientSession, url: str, loopback: Loopback, seq: int, seconds: float
) -> str:
    body = {
        "image_url": loopback.image_url(),
        "algorithm_name": "bench_sleep",
        "parameters": {"seconds": seconds},
        "callback_url": loopback.callback_url(seq),
        "callback_token": "bench",
    }
    async with http.post(f"{url}/jobs", json=body) as response:
        if response.status != 202:
            raise RuntimeError(f"submission refused: {await response.text()}")
        return str((await response.json())["job_id"])


async def kill_one(
    repo: Path, admin_url: str, plugin_dir: Path, tmp: Path, jobs: int
) -> tuple[list[object], str]:
    """``jobs`` jobs over two replicas; one killed -9 when a third are called back.

    Returns the table's row and the orphans' timeline, in seconds after the kill.
    """
    async with (
        scratch_database(admin_url, "primaa_bench") as database_url,
        Loopback([tiny_png()]).serving() as loopback,
        aiohttp.ClientSession() as http,
    ):
        with replicas(repo, database_url, plugin_dir, tmp) as (victim, survivor):
            loopback.expect(jobs)
            ids = {}
            for seq in range(jobs):
                target = (victim, survivor)[seq % 2]
                ids[seq] = await _submit(http, target.url, loopback, seq, 0.2)
            await loopback.wait_for(jobs // 3)
            doomed = group_pids(victim.pid)
            victim.popen.send_signal(signal.SIGKILL)
            killed_at, killed_wall = time.monotonic(), time.time()
            await asyncio.sleep(5)
            orphans = [pid for pid in doomed if _alive(pid)]
            complete = await loopback.wait(180)
            ran_twice = []
            restarted = finished = killed_wall
            claims: list[float] = []
            ends: list[float] = []
            for seq, job_id in ids.items():
                async with http.get(f"{survivor.url}/jobs/{job_id}") as response:
                    job = await response.json()
                if job["attempts"] > 1:
                    ran_twice.append(seq)
                    restarted = max(restarted, _seconds(job["started_at"]))
                    finished = max(finished, _seconds(job["finished_at"]))
                    claims.append(_seconds(job["started_at"]) - killed_wall)
                    ends.append(_seconds(job["finished_at"]) - killed_wall)
            last = max((loopback.arrived[s] for s in ran_twice if s in loopback.arrived), default=0)
            duplicates = sum(n - 1 for n in loopback.received.values())
            # Two different messages for one job would be two final outcomes; the same
            # message again is at-least-once delivery, which receivers de-duplicate.
            distinct = sum(len(ids) - 1 for ids in loopback.messages.values())
            failed = sum(1 for status in loopback.statuses.values() if status != "Completed")
            recovered = (
                f"{restarted - killed_wall:.1f} / {finished - killed_wall:.1f}"
                f" / {last - killed_at:.1f}"
                if ran_twice and complete
                else "-"
            )
            requeues = ", ".join(
                f"{count} at {at - killed_wall:.1f}"
                for at, count in _requeues(survivor.log_path)
                if at > killed_wall
            )
            timeline = (
                f"requeued {requeues or '-'}; claimed again {_span(claims)}; finished {_span(ends)}"
            )
            row: list[object] = [
                f"{len(loopback.arrived)}/{jobs}",
                failed,
                f"{duplicates} ({distinct})",
                len(ran_twice),
                recovered,
                len(orphans),
            ]
            return row, timeline


def _requeues(log_path: Path) -> list[tuple[float, int]]:
    """When a replica put jobs whose lease expired back to Pending, and how many."""
    found = []
    for line in log_path.read_text().splitlines():
        if '"jobs_requeued"' in line:
            event = json.loads(line)
            found.append((_seconds(event["timestamp"].replace("Z", "+00:00")), event["count"]))
    return found


def _span(seconds: list[float]) -> str:
    return f"{min(seconds):.1f}-{max(seconds):.1f} s" if seconds else "-"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _seconds(iso: str) -> float:
    return datetime.datetime.fromisoformat(iso).timestamp()


async def _run(quick: bool, base: Path | None, admin_url: str) -> None:
    jobs = 120 if quick else 300
    targets = [("this checkout", REPO)] + ([("base", base)] if base else [])
    kill_rows: list[list[object]] = []
    timelines: list[str] = []
    with scratch_dir("replicas") as tmp:
        plugin_dir = tmp / "plugin"
        plugin_dir.mkdir()
        shutil.copy(REPO / "bench" / "plugin.py", plugin_dir / f"{PLUGIN_MODULE}.py")
        for name, repo in targets:
            row, timeline = await kill_one(repo, admin_url, plugin_dir, tmp / f"kill-{name}", jobs)
            kill_rows.append([name, *row])
            timelines.append(f"{name}: the killed replica's jobs {timeline} after the kill")
    print_table(
        f"Two replicas on PostgreSQL, 1 worker each, {jobs} x bench_sleep 0.2 s, "
        "one replica killed -9 after a third",
        [
            "primaa",
            "called back",
            "failed",
            "duplicate callbacks (distinct messages)",
            "jobs run twice",
            "last of them started / finished / called back, s after kill",
            "orphans after 5 s",
        ],
        kill_rows,
    )
    print("\n".join(timelines))
    print(
        "target: all called back, 0 duplicates, orphaned jobs finished <= 15 s, 0 orphans;"
        " the kill comes from the receiver's handler of the last callback before it answers,"
        " so a callback of the killed replica may be in flight and sent again (same message)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--base", type=Path, help="another checkout to compare, side by side")
    parser.add_argument("--postgres", default=ADMIN_URL, help="an admin URL (CREATE DATABASE)")
    args = parser.parse_args()
    asyncio.run(_run(args.quick, args.base, args.postgres))


if __name__ == "__main__":
    main()
