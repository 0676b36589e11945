"""Status reads: ``GET /status/{id}`` and ``GET /jobs/{id}``, primaa against a bare handler.

Both servers run side by side on the same seeded jobs; runs alternate between
them (and swap order each round) so that noise on this shared machine hits
both alike, and each round starts them afresh: two processes of the same code
differ by a few percent, as much as a change worth measuring. Load: 64
connections from a separate process (wrk, else aiohttp), random ids. Targets:
primaa >= 0.6 x the bare handler's requests/s for ``/status/{id}``, >= 0.5 for
``/jobs/{id}``. The CPU time each server process spent per request is reported
beside it: on a busy machine it moves far less than requests/s.

    python -m bench.status_reads [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
from collections import defaultdict
from pathlib import Path

from bench.harness import (
    LoadResult,
    Process,
    bare_server,
    cpu_seconds,
    lag_buckets,
    lagged_over,
    load_tool,
    max_lag,
    median,
    primaa_serve,
    print_table,
    run_load,
    scratch_dir,
    seed_store,
    seed_store_in,
    write_paths,
)

ENDPOINTS = {"status": "/status/{}", "jobs": "/jobs/{}"}
DB_FILE = "primaa.sqlite3"


def run(
    quick: bool = False,
    sizes: tuple[int, ...] = (1000, 100_000),
    base: Path | None = None,
    both_loops: bool = False,
) -> None:
    """``base``: also run primaa from that checkout (target ``base``), e.g. before a change;
    ``both_loops``: also run this primaa on asyncio's own event loop (``primaa`` runs on
    uvloop when it is installed)."""
    duration = 3.0 if quick else 10.0
    rounds = 1 if quick else 3
    rows = []
    for size in sizes:
        with scratch_dir(f"reads-{size}") as tmp:
            ids = seed_store(tmp / "data", size)
            paths = {
                name: write_paths(tmp / f"{name}.txt", [pattern.format(i) for i in ids])
                for name, pattern in ENDPOINTS.items()
            }
            if both_loops:
                # A copy of the database: one service per SQLite file.
                (tmp / "asyncio-data").mkdir()
                shutil.copy(tmp / "data" / DB_FILE, tmp / "asyncio-data" / DB_FILE)
            if base is not None:
                # Its own copy, written by its own code: the schema may differ.
                seed_store_in(base, tmp / "base-data", size)
            results: dict[tuple[str, str], list[LoadResult]] = defaultdict(list)
            cpu_us: dict[tuple[str, str], list[float]] = defaultdict(list)
            lags: dict[str, list[str]] = defaultdict(list)
            blocked: dict[str, int] = defaultdict(int)
            targets: list[str] = []
            for round_ in range(rounds):
                # Fresh processes each round (see the module's docstring).
                with contextlib.ExitStack() as stack:
                    servers = _start_targets(stack, tmp, size, both_loops, base)
                    primaa_url = servers["primaa"].url
                    for server in servers.values():  # warm-up: connections, caches
                        run_load(server.url, duration=1, paths_file=paths["jobs"])
                    targets = list(servers)
                    turn = round_ % len(targets)
                    order = targets[turn:] + targets[:turn]
                    for endpoint in ENDPOINTS:
                        for target in order:
                            # The lag histogram is primaa's: read around its own runs.
                            before = lag_buckets(primaa_url) if target == "primaa" else None
                            pid = servers[target].pid
                            cpu_before = cpu_seconds(pid)
                            result = run_load(
                                servers[target].url,
                                duration=duration,
                                paths_file=paths[endpoint],
                            )
                            assert isinstance(result, LoadResult)
                            results[endpoint, target].append(result)
                            spent = cpu_seconds(pid) - cpu_before
                            cpu_us[endpoint, target].append(spent / max(result.requests, 1) * 1e6)
                            if before is not None:
                                after = lag_buckets(primaa_url)
                                lags[endpoint].append(max_lag(before, after))
                                blocked[endpoint] += lagged_over(before, after, 20)
            for endpoint in ENDPOINTS:
                bare_rps = median([r.rps for r in results[endpoint, "bare"]])
                bare_cpu = median(cpu_us[endpoint, "bare"])
                for target in targets:
                    runs = results[endpoint, target]
                    rps = median([r.rps for r in runs])
                    cpu = median(cpu_us[endpoint, target])
                    rows.append(
                        [
                            f"{size:,}",
                            ENDPOINTS[endpoint].format("{id}"),
                            target,
                            rps,
                            median([r.p50_ms for r in runs]),
                            median([r.p99_ms for r in runs]),
                            sum(r.errors for r in runs),
                            _worst(lags[endpoint]) if target == "primaa" else "",
                            blocked[endpoint] if target == "primaa" else "",
                            f"{rps / bare_rps:.2f}",
                            round(cpu),
                            f"{bare_cpu / cpu:.2f}",
                        ]
                    )
    print_table(
        f"Status reads, 64 connections, {load_tool()}, median of {rounds} x {duration:g} s"
        " alternating, fresh processes each round"
        " (targets: primaa/bare >= 0.6 for /status, >= 0.5 for /jobs)",
        [
            "jobs",
            "endpoint",
            "server",
            "req/s",
            "p50 ms",
            "p99 ms",
            "errors",
            "max loop lag",
            "lags>20ms",
            "vs bare",
            "cpu us/req",
            "cpu vs bare",
        ],
        rows,
    )


def _start_targets(
    stack: contextlib.ExitStack, tmp: Path, size: int, both_loops: bool, base: Path | None
) -> dict[str, Process]:
    """This primaa, the bare handler and the optional targets, each on its own database."""
    servers = {
        "primaa": stack.enter_context(primaa_serve(tmp / "data")),
        "bare": stack.enter_context(bare_server(size, tmp)),
    }
    if both_loops:
        servers["asyncio loop"] = stack.enter_context(
            primaa_serve(tmp / "asyncio-data", settings={"PRIMAA_EVENT_LOOP": "asyncio"})
        )
    if base is not None:
        servers["base"] = stack.enter_context(primaa_serve(tmp / "base-data", repo=base))
    return servers


def _worst(labels: list[str]) -> str:
    """The largest of ``max_lag`` labels such as ``<=5 ms`` / ``>5000 ms``."""

    def key(label: str) -> float:
        if label == "-":
            return -1.0
        value = float(label.strip("<=> ms"))
        return value + (0.5 if label.startswith(">") else 0.0)

    return max(labels, key=key) if labels else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 100_000])
    parser.add_argument("--base", type=Path, help="another checkout to compare, side by side")
    parser.add_argument(
        "--both-loops", action="store_true", help="also run primaa on asyncio's event loop"
    )
    args = parser.parse_args()
    run(args.quick, tuple(args.sizes), args.base, args.both_loops)


if __name__ == "__main__":
    main()
