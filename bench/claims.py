"""What one claim costs the database with a large backlog, on SQLite and PostgreSQL.

A store of ``--backlog`` Pending jobs (default 100,000: 98 % spread over five
CPU-bound algorithms, 2 % of one I/O-bound one) and the claims a dispatcher makes:
all algorithms (one process holding any job), the CPU-bound ones, the I/O-bound
one, and every algorithm but the CPU-bound ones (the I/O-bound and any this
process does not know), also when none of those are Pending. Each claim takes
jobs (2 or 16) and is timed ``--repeat`` times, and so is a sweep of expired
leases that finds none (``requeue_expired``); the table gives the medians.

    python -m bench.claims [--backlog N] [--repeat N] [--postgres URL]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

from bench.harness import print_table
from primaa.jobs.model import Job, JobStatus
from primaa.jobs.storage import AlgorithmFilter
from primaa.store.rows import job_row
from primaa.store.sql import SqlStore
from primaa.store.tables import jobs
from tests.support.postgres import scratch_database

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
CPU = frozenset(f"cpu_{n}" for n in range(5))
IO = frozenset({"io_0"})
T0 = 1_700_000_000.0


def _algorithm(n: int) -> str:
    return "io_0" if n % 50 == 0 else f"cpu_{n % 5}"


async def _seed(store: SqlStore, backlog: int) -> None:
    rows = [
        job_row(
            Job(
                job_id=f"job-{n:07d}",
                algorithm=_algorithm(n),
                parameters={},
                image_url="https://example.org/x.png",
                created_at=T0 + n,
                updated_at=T0 + n,
            )
        )
        for n in range(backlog)
    ]
    for start in range(0, len(rows), 10_000):
        batch = rows[start : start + 10_000]
        await store.run(lambda conn, batch=batch: conn.execute(jobs.insert(), batch))
    if store.dialect == "postgresql":
        await store.run(lambda conn: conn.execute(sa.text("ANALYZE jobs")))


async def _timed(
    store: SqlStore, algorithms: AlgorithmFilter | None, limit: int, repeat: int
) -> float:
    times = []
    for n in range(repeat):
        started = time.perf_counter()
        await store.claim(
            lease_owner=f"bench-{n}",
            lease_seconds=30,
            limit=limit,
            now=T0 + 1e6,
            algorithms=algorithms,
        )
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


async def _sweep(store: SqlStore, repeat: int) -> float:
    """A lease sweep that finds nothing expired, among the jobs the claims took."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        await store.requeue_expired(now=T0 + 1e6 + 1, max_attempts=3)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


async def _measure(url: str, backlog: int, repeat: int) -> list[object]:
    store = SqlStore(url)
    await store.open()
    try:
        await _seed(store, backlog)
        row: list[object] = []
        for algorithms, limit in [
            (None, 2),
            (AlgorithmFilter(CPU), 2),
            (AlgorithmFilter(IO), 16),
            (AlgorithmFilter(CPU, excluding=True), 16),
        ]:
            row.append(f"{await _timed(store, algorithms, limit, repeat):.2f}")
        # No I/O-bound job left Pending: the claim of "all but the CPU-bound" finds none.
        await store.run(
            lambda conn: conn.execute(
                jobs.update()
                .where(jobs.c.algorithm.in_(sorted(IO)))
                .values(status=JobStatus.COMPLETED.value)
            )
        )
        row.append(f"{await _timed(store, AlgorithmFilter(CPU, excluding=True), 16, repeat):.2f}")
        row.append(f"{await _sweep(store, repeat):.2f}")
        return row
    finally:
        await store.close()


async def _run(backlog: int, repeat: int, admin_url: str) -> None:
    rows: list[list[object]] = []
    with tempfile.TemporaryDirectory(prefix="primaa-bench-claims-") as tmp:
        rows.append(
            [
                "SQLite",
                *await _measure(f"sqlite:///{Path(tmp) / 'claims.sqlite3'}", backlog, repeat),
            ]
        )
    async with scratch_database(admin_url, "primaa_bench") as url:
        rows.append(["PostgreSQL", *await _measure(url, backlog, repeat)])
    print_table(
        f"One claim, median ms of {repeat}, with {backlog:,} Pending jobs (98 % CPU-bound)",
        [
            "store",
            "any algorithm, 2",
            "CPU-bound, 2",
            "I/O-bound, 16",
            "all but CPU-bound, 16",
            "same, none Pending",
            "lease sweep, none expired",
        ],
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backlog", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--postgres", default=ADMIN_URL, help="an admin URL (CREATE DATABASE)")
    args = parser.parse_args()
    asyncio.run(_run(args.backlog, args.repeat, args.postgres))


if __name__ == "__main__":
    main()
