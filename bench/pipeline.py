"""Submissions and the whole pipeline of a job, through a real ``primaa serve``.

* submissions: ``POST /job-submission`` under 64 connections from a separate
  process (wrk + Lua, else aiohttp), primaa against the bare handler, alternating;
  ``bench_noop`` jobs (no CPU) that the service runs meanwhile.
* pipeline: jobs submitted through the API, image fetched from a loopback
  server, run, stored, called back to a loopback receiver; jobs/s until the
  last callback and submit-to-callback latency. ``bench_noop`` as fast as
  possible (target >= 300 jobs/s), ``bench_noop`` at 20 jobs/s (target p50 <=
  25 ms), and ``poi_detection`` on 512x512 H&E with 1 and 2 workers (target:
  2 workers >= 1.8x).

Each row also shows the CPU time spent per job by the service process, by its
workers and by this driver (which serves the images and receives the callbacks),
read from ``/proc``. On 2 cores they set a ceiling: 2 / (their sum) jobs/s,
whatever the number of workers.

    python -m bench.pipeline [--quick] [--base DIR]

``--base DIR`` also runs the ``bench_noop`` burst on the primaa of another checkout
(with this ``bench/`` copied in), alternating with this one, to measure a change.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import time
from collections import defaultdict
from pathlib import Path

import aiohttp

from bench.harness import (
    CONNECTIONS,
    REPO,
    LoadResult,
    bare_server,
    cpu_seconds,
    group_pids,
    lag_buckets,
    lagged_over,
    load_tool,
    max_lag,
    median,
    percentile,
    primaa_serve,
    print_table,
    run_load,
    scratch_dir,
)
from bench.loopback import Loopback, he_tiles, tiny_png


@dataclasses.dataclass(frozen=True)
class PipelineResult:
    jobs: int
    done: int
    failed: int
    seconds: float
    latencies: list[float]
    lag: str
    lags_over_20ms: int
    #: CPU ms per job called back: the service process, its workers, this driver.
    cpu_ms: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def rate(self) -> float:
        return self.done / self.seconds if self.seconds else 0.0


async def _submit_all(
    base_url: str,
    loopback: Loopback,
    algorithm: str,
    count: int,
    *,
    rate: float | None = None,
    images: int = 1,
    within: float = 120.0,
    service_pid: int | None = None,
) -> PipelineResult:
    """Submit ``count`` jobs (as fast as 64 connections allow, or at ``rate`` per second)
    and wait for their callbacks, at most ``within`` seconds. With ``service_pid``, the
    CPU time of that process, of its workers and of this driver is counted."""
    loopback.expect(count)
    workers = group_pids(service_pid) if service_pid is not None else []
    cpu_before = [cpu_seconds(pid) for pid in [*([service_pid] if service_pid else []), *workers]]
    driver_before = time.process_time()
    submitted: dict[int, float] = {}
    before = await asyncio.to_thread(lag_buckets, base_url)
    connector = aiohttp.TCPConnector(limit=CONNECTIONS)
    client_timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(base_url, connector=connector, timeout=client_timeout) as http:

        async def submit(seq: int) -> None:
            body = {
                "image_url": loopback.image_url(seq % images),
                "algorithm_name": algorithm,
                "callback_url": loopback.callback_url(seq),
                "callback_token": "bench",
            }
            submitted[seq] = time.monotonic()
            async with http.post("/job-submission", json=body) as response:
                if response.status != 200:
                    raise RuntimeError(f"submission refused: {await response.text()}")

        started = time.monotonic()
        if rate is None:
            queue = iter(range(count))

            async def submitter() -> None:
                for seq in queue:
                    await submit(seq)

            await asyncio.gather(*(submitter() for _ in range(CONNECTIONS)))
        else:
            tasks = []
            for seq in range(count):
                delay = started + seq / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(submit(seq)))
            await asyncio.gather(*tasks)
        await loopback.wait(within)
    driver_cpu = time.process_time() - driver_before
    cpu_after = [cpu_seconds(pid) for pid in [*([service_pid] if service_pid else []), *workers]]
    spent = [b - a for a, b in zip(cpu_before, cpu_after, strict=True)]
    after = await asyncio.to_thread(lag_buckets, base_url)
    arrived = dict(loopback.arrived)
    per_job = 1000 / max(len(arrived), 1)
    cpu_ms = (
        (spent[0] * per_job, sum(spent[1:]) * per_job, driver_cpu * per_job)
        if spent
        else (0.0, 0.0, 0.0)
    )
    last = max(arrived.values(), default=started)
    latencies = [arrived[s] - submitted[s] for s in arrived if s in submitted]
    failed = sum(1 for status in loopback.statuses.values() if status != "Completed")
    return PipelineResult(
        jobs=count,
        done=len(arrived),
        failed=failed,
        seconds=last - started,
        latencies=latencies,
        lag=max_lag(before, after),
        lags_over_20ms=lagged_over(before, after, 20),
        cpu_ms=cpu_ms,
    )


def _row(label: str, result: PipelineResult, target: str) -> list[object]:
    ms = [x * 1000 for x in result.latencies]
    return [
        label,
        f"{result.done}/{result.jobs}",
        result.failed,
        result.rate,
        percentile(ms, 50),
        percentile(ms, 95),
        percentile(ms, 99),
        result.lag,
        result.lags_over_20ms,
        *(f"{ms:.1f}" for ms in result.cpu_ms),
        target,
    ]


async def _burst_against(base: Path, burst: int, tmp: Path) -> list[list[object]]:
    """The ``bench_noop`` burst on this checkout and on ``base``, alternating, twice."""
    rows: list[list[object]] = []
    async with Loopback([tiny_png()]).serving() as loopback:
        for round_ in range(2):
            for name, repo in (("this checkout", REPO), ("base", base)):
                with primaa_serve(tmp / f"burst-{name}-{round_}", repo=repo) as primaa:
                    await _submit_all(primaa.url, loopback, "bench_noop", 50)  # warm-up
                    result = await _submit_all(
                        primaa.url, loopback, "bench_noop", burst, service_pid=primaa.pid
                    )
                    rows.append(_row(f"bench_noop, all at once, {name}", result, ""))
    return rows


async def _pipeline(quick: bool, tmp: Path, base: Path | None = None) -> list[list[object]]:
    rows: list[list[object]] = []
    burst = 300 if quick else 3000
    paced = 100 if quick else 600
    if base is not None:
        rows += await _burst_against(base, min(burst, 600), tmp)
    async with Loopback([tiny_png()]).serving() as loopback:
        with primaa_serve(tmp / "noop", workers=1) as primaa:
            await _submit_all(primaa.url, loopback, "bench_noop", 50)  # warm-up
            result = await _submit_all(
                primaa.url, loopback, "bench_noop", burst, service_pid=primaa.pid
            )
            rows.append(_row("bench_noop, all at once", result, ">= 300 jobs/s"))
            result = await _submit_all(
                primaa.url, loopback, "bench_noop", paced, rate=20, service_pid=primaa.pid
            )
            rows.append(_row("bench_noop, 20 jobs/s", result, "p50 <= 25 ms"))
    tiles, _folder = he_tiles(16)
    count = 24 if quick else 96
    rounds = 1 if quick else 2
    by_workers: dict[int, list[PipelineResult]] = defaultdict(list)
    async with Loopback(tiles).serving() as loopback:
        for _ in range(rounds):
            for workers in (1, 2):
                with primaa_serve(tmp / f"poi-{workers}", workers=workers) as primaa:
                    await _submit_all(primaa.url, loopback, "poi_detection", 4, images=len(tiles))
                    by_workers[workers].append(
                        await _submit_all(
                            primaa.url,
                            loopback,
                            "poi_detection",
                            count,
                            images=len(tiles),
                            service_pid=primaa.pid,
                        )
                    )
    for workers, results in by_workers.items():
        best = max(results, key=lambda r: r.rate)
        rows.append(
            _row(f"poi_detection 512x512, {workers} worker(s)", best, ">= 1.8x of 1 worker")
        )
    one = max(r.rate for r in by_workers[1])
    two = max(r.rate for r in by_workers[2])
    ceiling = 2000 / sum(max(by_workers[2], key=lambda r: r.rate).cpu_ms)
    blank = [""] * 8
    rows.append(["  2 workers / 1 worker", "", "", f"{two / one:.2f}x", *blank, ">= 1.8x"])
    rows.append(
        [
            "  2-core ceiling (2 / CPU per job)",
            "",
            "",
            f"{ceiling:.1f} = {ceiling / one:.2f}x",
            *blank,
            f"2 workers at {two / ceiling:.0%}",
        ]
    )
    return rows


def pipeline(quick: bool = False, base: Path | None = None) -> None:
    with scratch_dir("pipeline") as tmp:
        rows = asyncio.run(_pipeline(quick, tmp, base))
    print_table(
        "Pipeline: submit -> fetch -> run -> store -> callback (loopback), 64 connections",
        [
            "case",
            "called back",
            "failed",
            "jobs/s",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "max loop lag",
            "lags>20ms",
            "cpu ms service",
            "workers",
            "driver",
            "target",
        ],
        rows,
    )


async def _submissions(quick: bool, tmp: Path) -> list[list[object]]:
    duration = 3.0 if quick else 10.0
    rounds = 1 if quick else 3
    results: dict[str, list[LoadResult]] = defaultdict(list)
    lags: list[str] = []
    blocked = 0
    async with Loopback([tiny_png()]).serving() as loopback:
        body = tmp / "submission.json"
        body.write_text(
            json.dumps({"image_url": loopback.image_url(), "algorithm_name": "bench_noop"})
        )
        with contextlib.ExitStack() as stack:
            primaa = stack.enter_context(primaa_serve(tmp / "submit"))
            bare = stack.enter_context(bare_server(0, tmp))
            targets = {"primaa": primaa.url, "bare": bare.url}
            for round_ in range(rounds):
                order = list(targets) if round_ % 2 == 0 else list(reversed(targets))
                for target in order:
                    before = await asyncio.to_thread(lag_buckets, primaa.url)
                    result = await asyncio.to_thread(
                        run_load,
                        targets[target],
                        duration=duration,
                        post_path="/job-submission",
                        body_file=body,
                    )
                    assert isinstance(result, LoadResult)
                    results[target].append(result)
                    if target == "primaa":
                        after = await asyncio.to_thread(lag_buckets, primaa.url)
                        lags.append(max_lag(before, after))
                        blocked += lagged_over(before, after, 20)
    bare_rps = median([r.rps for r in results["bare"]])
    rows: list[list[object]] = []
    for target, runs in results.items():
        rps = median([r.rps for r in runs])
        rows.append(
            [
                target,
                rps,
                median([r.p50_ms for r in runs]),
                median([r.p99_ms for r in runs]),
                sum(r.errors for r in runs),
                ", ".join(lags) if target == "primaa" else "",
                blocked if target == "primaa" else "",
                f"{rps / bare_rps:.2f}",
            ]
        )
    return rows


def submissions(quick: bool = False) -> None:
    with scratch_dir("submissions") as tmp:
        rows = asyncio.run(_submissions(quick, tmp))
    print_table(
        f"Submissions: POST /job-submission (bench_noop), 64 connections, {load_tool()},"
        " median of alternating runs",
        ["server", "req/s", "p50 ms", "p99 ms", "errors", "max loop lag", "lags>20ms", "vs bare"],
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=["submissions", "pipeline"])
    parser.add_argument("--base", type=Path, help="another checkout to compare, side by side")
    args = parser.parse_args()
    if args.only in (None, "submissions"):
        submissions(args.quick)
    if args.only in (None, "pipeline"):
        pipeline(args.quick, args.base)


if __name__ == "__main__":
    main()
