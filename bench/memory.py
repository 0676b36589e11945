"""Memory: RSS of the service (main process; workers apart) with 100,000 stored jobs.

Measured idle, after reads over every job (all listing pages, then status and
job reads of random ids), and over a sustained mixed load: job reads at 64
connections from a separate process plus ``bench_noop`` submissions with
callbacks at 20 jobs/s. Reports the samples and the least-squares slope.
Target: main RSS <= 150 MB, no growth.

RSS counts the pages of the SQLite database that the status reader maps
(``mmap``: a quarter less CPU per read), up to the file's size: page cache,
shared with the kernel and dropped under memory pressure, which a ``read()``
path would fill just the same outside the process. The ``private`` column is the
process's own (anonymous) memory, where a leak would show.

    python -m bench.memory [--quick] [--minutes M]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import time
from pathlib import Path

import aiohttp

from bench.harness import (
    LoadResult,
    finish_load,
    group_pids,
    primaa_serve,
    print_table,
    rss_mb,
    run_load,
    scratch_dir,
    seed_store,
    write_paths,
)
from bench.loopback import Loopback, tiny_png

JOBS = 100_000


def _sample(pid: int) -> tuple[float, float, float]:
    """Main RSS, its private part, and the sum of the workers' RSS, in MB."""
    workers = sum(rss_mb(worker) for worker in group_pids(pid))
    return rss_mb(pid), rss_mb(pid, "RssAnon"), workers


def _slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope in MB per minute of ``(seconds, MB)`` points."""
    if len(points) < 2:
        return float("nan")
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_m = sum(m for _, m in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    cov = sum((t - mean_t) * (m - mean_m) for t, m in points)
    return cov / var * 60 if var else float("nan")


async def _read_everything(base_url: str, limit: int = 500) -> int:
    """Every listing page, newest first; returns the jobs seen."""
    seen = 0
    cursor: str | None = None
    async with aiohttp.ClientSession(base_url) as http:
        for _ in range(JOBS // limit + 2):
            params = {"limit": str(limit)} | ({"cursor": cursor} if cursor else {})
            async with http.get("/jobs", params=params) as response:
                page = await response.json()
            seen += len(page["jobs"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
    return seen


async def _sustained(
    base_url: str, pid: int, paths: Path, seconds: float, every: float
) -> tuple[list[tuple[float, float, float, float]], LoadResult, int]:
    """Reads from wrk and paced submissions for ``seconds``, RSS sampled every ``every``."""
    reads = run_load(base_url, duration=seconds, paths_file=paths, background=True)
    assert isinstance(reads, subprocess.Popen)
    samples: list[tuple[float, float, float, float]] = []
    submitted = 0
    async with (
        Loopback([tiny_png()]).serving() as loopback,
        aiohttp.ClientSession(base_url) as http,
    ):
        started = time.monotonic()
        next_sample = started
        while (now := time.monotonic()) < started + seconds:
            if now >= next_sample:
                samples.append((now - started, *_sample(pid)))
                next_sample += every
            body = {
                "image_url": loopback.image_url(),
                "algorithm_name": "bench_noop",
                "callback_url": loopback.callback_url(submitted),
            }
            async with http.post("/job-submission", json=body) as response:
                await response.read()
            submitted += 1
            await asyncio.sleep(max(0.0, started + submitted / 20 - time.monotonic()))
        samples.append((time.monotonic() - started, *_sample(pid)))
    result = await asyncio.to_thread(finish_load, reads, seconds)
    return samples, result, submitted


def run(quick: bool = False, minutes: float | None = None) -> None:
    seconds = 60 * minutes if minutes is not None else (20.0 if quick else 300.0)
    every = max(1.0, seconds / 30)
    with scratch_dir("memory") as tmp:
        ids = seed_store(tmp / "data", JOBS)
        paths = write_paths(tmp / "jobs.txt", [f"/jobs/{i}" for i in ids])
        status_paths = write_paths(tmp / "status.txt", [f"/status/{i}" for i in ids])
        with primaa_serve(tmp / "data", workers=0) as primaa:
            rows: list[list[object]] = [["started, idle", *_sample(primaa.pid), ""]]
            listed = asyncio.run(_read_everything(primaa.url))
            rows.append([f"after listing all {listed:,} jobs", *_sample(primaa.pid), ""])
            read_for = 5.0 if quick else 30.0
            for label, file in (("status", status_paths), ("job", paths)):
                load = run_load(primaa.url, duration=read_for, paths_file=file)
                assert isinstance(load, LoadResult)
                rows.append([f"after {load.requests:,} {label} reads", *_sample(primaa.pid), ""])
            samples, reads, submitted = asyncio.run(
                _sustained(primaa.url, primaa.pid, paths, seconds, every)
            )
    for t, main_mb, private_mb, workers_mb in samples:
        rows.append([f"sustained load, t = {t:4.0f} s", main_mb, private_mb, workers_mb, ""])
    late = samples[len(samples) // 3 :]
    rows.append(
        [
            "slope, whole run (MB/min)",
            _slope([(t, m) for t, m, _, _ in samples]),
            _slope([(t, p) for t, _, p, _ in samples]),
            _slope([(t, w) for t, _, _, w in samples]),
            "",
        ]
    )
    rows.append(
        [
            "slope, last 2/3 (MB/min)",
            _slope([(t, m) for t, m, _, _ in late]),
            _slope([(t, p) for t, _, p, _ in late]),
            "",
            "",
        ]
    )
    peak = max(r[1] for r in rows if isinstance(r[1], float))
    private = max(r[2] for r in rows if isinstance(r[2], float))
    verdict = "<= 150 MB" if peak <= 150 else f"> 150 MB (private {private:.0f} MB)"
    rows.append(["peak main (MB)", peak, private, "", verdict])
    print_table(
        f"Memory with {JOBS:,} stored jobs; sustained {seconds:g} s of {reads.rps:,.0f} job"
        f" reads/s (64 connections) + {submitted} bench_noop jobs at 20/s with callbacks",
        ["moment", "main RSS MB", "private MB", "workers RSS MB", "target"],
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--minutes", type=float, help="sustained load (default 5, quick 1/3)")
    args = parser.parse_args()
    run(args.quick, args.minutes)


if __name__ == "__main__":
    main()
