"""Submit-to-start latency on an idle second replica: LISTEN/NOTIFY against polling alone.

    python -m bench.wakeups [--jobs 40] [--database-url postgresql://postgres@127.0.0.1/test]

Two ``primaa serve`` replicas on one fresh PostgreSQL database. Replica A is kept
full (3 long jobs fill its 3 places: 1 worker, 1 I/O slot); replica B is idle. Each
job is submitted to A, so only B can start it: the latency is the job's
``started_at`` (B's claim) less the moment before the POST, on one machine's clock.
Jobs go one at a time at random gaps (0.2-1.2 s), so the poll's phase is sampled.

Variants, each on its own database: ``notify`` (this code: the triggers notify, B
listens), ``poll only`` (the same code with the triggers dropped: B finds the job at
its next poll, ``poll_interval`` 1 s), and ``notify, 10 s poll`` (the fallback slowed
to cut idle queries). Prints p50, p95 and max per variant.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import http.server
import json
import os
import random
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

from bench.harness import median, percentile, primaa_serve, print_table, scratch_dir
from bench.loopback import tiny_png
from tests.support.postgres import execute, scratch_database_sync

DEFAULT_URL = os.environ.get(
    "PRIMAA_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
PLUGINS = "bench.plugin,tests.support.algorithms"
JOB_TRIGGERS = ("primaa_jobs_inserted", "primaa_jobs_pending")


@contextlib.contextmanager
def image_server() -> Iterator[str]:
    """A tiny PNG on 127.0.0.1, from a thread (the driver itself is synchronous)."""
    png = tiny_png()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(png)))
            self.end_headers()
            self.wfile.write(png)

        def log_message(self, *_: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/tile.png"
    finally:
        server.shutdown()


def _request(method: str, url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        answer: dict[str, Any] = json.loads(response.read())
        return answer


def _submit(base: str, image_url: str, seconds: float) -> str:
    body = {
        "image_url": image_url,
        "algorithm_name": "test_async",
        "parameters": {"seconds": seconds, "steps": 1},
    }
    return str(_request("POST", f"{base}/jobs", body)["job_id"])


def _wait(base: str, job_id: str, field: str, within: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        job = _request("GET", f"{base}/jobs/{job_id}")
        if (field == "started_at" and job["started_at"]) or job["status"] == field:
            return job
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {job_id} not {field} after {within} s: {job}")
        time.sleep(0.005)


def measure(base_url: str, image_url: str, jobs: int, *, notify: bool, poll: float) -> list[float]:
    settings = {"PRIMAA_IO_CONCURRENCY": "1", "PRIMAA_PLUGINS": PLUGINS}
    settings["PRIMAA_POLL_INTERVAL"] = str(poll)
    with scratch_database_sync(base_url, "primaa_bench") as url, scratch_dir("wakeups") as scratch:
        settings["PRIMAA_DATABASE_URL"] = url
        with primaa_serve(scratch / "a", settings=settings) as busy:
            if not notify:
                asyncio.run(
                    execute(url, *(f"DROP TRIGGER {name} ON jobs" for name in JOB_TRIGGERS))
                )
            for held in [_submit(busy.url, image_url, 3600) for _ in range(3)]:
                _wait(busy.url, held, "Running")
            with primaa_serve(scratch / "b", settings=settings):
                latencies = []
                for _ in range(jobs):
                    time.sleep(random.uniform(0.2, 1.2))
                    submitted = time.time()
                    job_id = _submit(busy.url, image_url, 0.0)
                    started = _wait(busy.url, job_id, "started_at")["started_at"]
                    at = datetime.datetime.fromisoformat(started).timestamp()
                    latencies.append((at - submitted) * 1000)
                    _wait(busy.url, job_id, "Completed")
                return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--database-url", default=DEFAULT_URL)
    args = parser.parse_args()
    variants = [("notify", True, 1.0), ("poll only", False, 1.0), ("notify, 10 s poll", True, 10.0)]
    rows = []
    with image_server() as image_url:
        for name, notify, poll in variants:
            ms = measure(args.database_url, image_url, args.jobs, notify=notify, poll=poll)
            rows.append([name, poll, len(ms), median(ms), percentile(ms, 95), max(ms)])
    print_table(
        f"Submit to start on an idle second replica ({args.jobs} jobs each, ms)",
        ["variant", "poll s", "jobs", "p50 ms", "p95 ms", "max ms"],
        rows,
    )


if __name__ == "__main__":
    main()
