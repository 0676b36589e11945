"""What the service benches share: real server processes, seeding, load, metrics, tables.

Every process started here runs in its own session and is killed (its whole
process group) and reaped on exit, whatever happened; every load is bounded in
time and in requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from primaa.jobs.model import Delivery, DeliveryAttempt, DeliveryStatus, Job, JobStatus
from primaa.store.rows import delivery_row, job_row
from primaa.store.sql import SqlStore
from primaa.store.tables import deliveries, delivery_attempts, jobs

REPO = Path(__file__).resolve().parents[1]
BENCH_DIR = REPO / "bench"
WRK_DIR = BENCH_DIR / "wrk"
BENCH_PLUGIN = "bench.plugin"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
#: Concurrent connections of every load (issue 5).
CONNECTIONS = 64
#: Lag histogram of the service (primaa/metrics.py).
LAG_METRIC = "primaa_event_loop_lag_seconds"
#: Namespace of the deterministic job ids of a seeded store (bench/bare_server.py rebuilds them).
SEED_NAMESPACE = uuid.UUID("5ee4b3c1-0000-4000-8000-000000000005")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def bench_env(extra: Mapping[str, str] | None = None, repo: Path = REPO) -> dict[str, str]:
    """The caller's environment without its ``PRIMAA_*``, ``repo`` first on ``PYTHONPATH``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRIMAA_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(repo), env.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


@contextlib.contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=f"primaa-bench-{prefix}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# -- processes ---------------------------------------------------------------------------------


@dataclasses.dataclass
class Process:
    """A child process in its own session; :meth:`stop` kills its group and reaps it."""

    popen: subprocess.Popen[bytes]
    url: str
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(STOP_TIMEOUT)
        # Workers of a service share its group; kill whatever is left of it, then reap.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(STOP_TIMEOUT)

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def _spawn(
    command: Sequence[str], env: Mapping[str, str], log_path: Path, cwd: Path = REPO
) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen(
            list(command),
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_ready(process: Process, path: str = "/health") -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.popen.poll() is not None:
            raise RuntimeError(
                f"{process.popen.args!r} exited with {process.popen.returncode}:\n"
                + process.log_tail()
            )
        with (
            contextlib.suppress(OSError, urllib.error.URLError),
            urllib.request.urlopen(process.url + path, timeout=2) as response,
        ):
            if response.status == 200:
                return
        if time.monotonic() > deadline:
            process.stop()
            raise RuntimeError(f"{process.url} not ready after {START_TIMEOUT} s")
        time.sleep(0.1)


def wait_settled(pid: int, *, quiet: float = 0.05, within: float = 30.0) -> None:
    """Wait until the service and its workers use under ``quiet`` CPU seconds in half a second.

    ``/health`` answers before the worker processes have imported their plugins (a
    second of CPU each): measured meanwhile, a run pays their start-up as work per job.
    """
    deadline = time.monotonic() + within
    before = sum(cpu_seconds(member) for member in [pid, *group_pids(pid)])
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = sum(cpu_seconds(member) for member in [pid, *group_pids(pid)])
        if now - before < quiet:
            return
        before = now


@contextlib.contextmanager
def primaa_serve(
    data_dir: Path,
    *,
    workers: int = 1,
    settings: Mapping[str, str] | None = None,
    repo: Path = REPO,
) -> Iterator[Process]:
    """``primaa serve`` on ``data_dir`` with the bench plugin, as an operator runs it.

    ``repo``: run the primaa of another checkout (with this ``bench/`` copied into it),
    to compare a change against its base side by side.
    """
    port = free_port()
    env = bench_env(
        {
            "PRIMAA_PLUGINS": BENCH_PLUGIN,
            "PRIMAA_ALLOW_PRIVATE_URLS": "true",
            "PRIMAA_LOG_FORMAT": "json",
            "PRIMAA_MAX_UNFINISHED_JOBS": "10000000",
            **(settings or {}),
        },
        repo,
    )
    command = [
        sys.executable,
        "-m",
        "primaa.cli",
        "serve",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        "--workers",
        str(workers),
    ]
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir.parent / f"{data_dir.name}-serve-{port}.log"
    process = Process(_spawn(command, env, log_path, repo), f"http://127.0.0.1:{port}", log_path)
    try:
        wait_ready(process)
        wait_settled(process.pid)
        yield process
    finally:
        process.stop()


@contextlib.contextmanager
def bare_server(jobs_count: int, log_dir: Path) -> Iterator[Process]:
    """The yardstick: aiohttp answering the same JSON from a dict (bench/bare_server.py)."""
    port = free_port()
    command = [sys.executable, "-m", "bench.bare_server", "--port", str(port)]
    command += ["--jobs", str(jobs_count)]
    log_path = log_dir / f"bare-{port}.log"
    process = Process(_spawn(command, bench_env(), log_path), f"http://127.0.0.1:{port}", log_path)
    try:
        wait_ready(process, "/ready")
        yield process
    finally:
        process.stop()


def group_pids(pid: int) -> list[int]:
    """The live processes of ``pid``'s process group other than ``pid`` (its workers)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        state, _ppid, pgrp = text[text.rindex(")") + 2 :].split()[:3]
        member = int(stat.parent.name)
        if int(pgrp) == pid and member != pid and state != "Z":
            found.append(member)
    return sorted(found)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far, from ``/proc`` (0 when gone).

    CPU time per request is steadier than requests/s on a shared machine: a
    neighbour that takes the core away slows the clock, not the work done.
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """Resident set size from ``/proc`` (no psutil needed); 0 when the process is gone.

    ``field="RssAnon"``: only the process's own (anonymous) memory, without the
    file pages it maps, such as the SQLite database the status reader maps.
    """
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


# -- seeding -----------------------------------------------------------------------------------


def seeded_job_id(index: int) -> str:
    return str(uuid.uuid5(SEED_NAMESPACE, str(index)))


def seeded_job(index: int) -> tuple[Job, Delivery | None]:
    """The ``index``-th job of a seeded store: final, most with a delivered callback.

    Deterministic, so the bare server rebuilds the same bodies without the store.
    """
    created = 1_700_000_000.0 + index
    failed = index % 10 == 9
    job = Job(
        job_id=seeded_job_id(index),
        algorithm="poi_detection",
        parameters={"min_distance": 7} if index % 2 else {},
        status=JobStatus.FAILED if failed else JobStatus.COMPLETED,
        image_url=f"https://images.example.org/slides/{index}.png",
        callback_url=None if index % 4 == 3 else "https://lims.example.org/callback",
        callback_token="secret-token",
        progress_percent=100.0,
        attempts=1,
        error="the image is not a PNG, JPEG or TIFF" if failed else None,
        created_at=created,
        updated_at=created + 2.5,
        started_at=created + 0.1,
        finished_at=created + 2.5,
    )
    if job.callback_url is None:
        return job, None
    delivery = Delivery(
        delivery_id=f"msg_{index:032x}",
        job_id=job.job_id,
        url=job.callback_url,
        payload={"type": "Feature", "geometry": None, "properties": {"job_id": job.job_id}},
        token=job.callback_token,
        status=DeliveryStatus.DELIVERED,
        next_attempt_at=created + 2.5,  # kept after delivery, as the store does
        attempts=(DeliveryAttempt(at=created + 2.6, status_code=200, error=None, duration=0.01),),
        created_at=created + 2.5,
    )
    return job, delivery


def seed_store_in(repo: Path, data_dir: Path, count: int) -> None:
    """:func:`seed_store` run by another checkout's own code (its ``bench/`` and store), so
    that a base whose schema differs from this checkout's gets a database it can read."""
    script = "import sys, pathlib; from bench.harness import seed_store;"
    script += " seed_store(pathlib.Path(sys.argv[1]), int(sys.argv[2]))"
    command = [sys.executable, "-c", script, str(data_dir), str(count)]
    subprocess.run(command, check=True, cwd=repo, env=bench_env(repo=repo))


def seed_store(data_dir: Path, count: int, batch: int = 5000) -> list[str]:
    """Create the schema with the store's own migrations, then bulk-insert ``count`` jobs.

    Goes around the HTTP API (100k submissions would take minutes) but writes the
    rows the store itself would write; returns the job ids.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "primaa.sqlite3"

    async def migrate() -> None:
        store = SqlStore(f"sqlite:///{path}")
        await store.open()
        await store.close()

    asyncio.run(migrate())
    engine = sa.create_engine(f"sqlite:///{path}")
    ids = []
    try:
        for start in range(0, count, batch):
            job_rows: list[dict[str, Any]] = []
            delivery_rows: list[dict[str, Any]] = []
            attempt_rows: list[dict[str, Any]] = []
            for index in range(start, min(start + batch, count)):
                job, delivery = seeded_job(index)
                ids.append(job.job_id)
                job_rows.append(job_row(job))
                if delivery is not None:
                    delivery_rows.append(delivery_row(delivery))
                    attempt_rows.extend(
                        {"delivery_id": delivery.delivery_id, **dataclasses.asdict(a)}
                        for a in delivery.attempts
                    )
            with engine.begin() as conn:
                conn.execute(jobs.insert(), job_rows)
                if delivery_rows:
                    conn.execute(deliveries.insert(), delivery_rows)
                    conn.execute(delivery_attempts.insert(), attempt_rows)
    finally:
        engine.dispose()
    return ids


# -- load --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LoadResult:
    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p99_ms: float
    tool: str

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def load_tool() -> str:
    return "wrk" if shutil.which("wrk") else "aiohttp"


def run_load(
    base_url: str,
    *,
    duration: float,
    paths_file: Path | None = None,
    post_path: str | None = None,
    body_file: Path | None = None,
    connections: int = CONNECTIONS,
    background: bool = False,
) -> LoadResult | subprocess.Popen[bytes]:
    """Load ``base_url`` from a separate process: GETs of the paths in ``paths_file`` (random
    order) or POSTs of ``body_file`` to ``post_path``; ``wrk`` when installed.

    With ``background`` the process is returned unstarted-waited; :func:`finish_load`
    collects it.
    """
    if paths_file is None and (post_path is None or body_file is None):
        raise ValueError("give paths_file, or post_path and body_file")
    seconds = max(1, round(duration))
    if load_tool() == "wrk":
        script = WRK_DIR / ("paths.lua" if paths_file is not None else "post.lua")
        argument = str(paths_file) if paths_file is not None else str(body_file)
        url = base_url + (post_path or "/")
        command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s"]
        command += ["-s", str(script), url, "--", argument]
    else:
        command = [sys.executable, "-m", "bench.loadgen", base_url]
        command += ["--connections", str(connections), "--duration", str(seconds)]
        if paths_file is not None:
            command += ["--paths", str(paths_file)]
        else:
            command += ["--post", str(post_path), "--body", str(body_file)]
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env=bench_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    if background:
        return process
    return finish_load(process, seconds)


def finish_load(process: subprocess.Popen[bytes], duration: float) -> LoadResult:
    """Wait for a load process (killed if it overruns) and parse its JSON summary line."""
    try:
        out, err = process.communicate(timeout=duration + 30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise RuntimeError(f"load generator overran: {process.args!r}") from None
    for line in reversed(out.decode(errors="replace").splitlines()):
        if line.startswith("{"):
            data = json.loads(line)
            return LoadResult(
                requests=int(data["requests"]),
                seconds=float(data["seconds"]),
                errors=int(data["errors"]),
                p50_ms=float(data["p50_ms"]),
                p99_ms=float(data["p99_ms"]),
                tool=str(data["tool"]),
            )
    raise RuntimeError(f"no summary from {process.args!r}: {err.decode(errors='replace')[-2000:]}")


def write_paths(path: Path, paths: Sequence[str], limit: int = 100_000) -> Path:
    """A file of request paths for the load generator (a random sample of at most ``limit``)."""
    chosen = list(paths) if len(paths) <= limit else random.sample(list(paths), limit)
    path.write_text("\n".join(chosen) + "\n")
    return path


# -- metrics -----------------------------------------------------------------------------------


def fetch_text(url: str, timeout: float = 10.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        text: str = response.read().decode()
        return text


def lag_buckets(base_url: str) -> dict[float, float]:
    """Cumulative counts of the service's loop-lag histogram, by upper bound."""
    buckets: dict[float, float] = {}
    for line in fetch_text(base_url + "/metrics").splitlines():
        if line.startswith(LAG_METRIC + "_bucket{"):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            buckets[float(bound)] = float(line.rsplit(" ", 1)[1])
    return buckets


def max_lag(before: Mapping[float, float], after: Mapping[float, float]) -> str:
    """The largest lag observed between two scrapes, as the histogram bucket holding it."""
    total = after.get(float("inf"), 0.0) - before.get(float("inf"), 0.0)
    if total <= 0:
        return "-"
    finite = sorted(b for b in after if b != float("inf"))
    for bound in finite:
        if after[bound] - before.get(bound, 0.0) >= total:
            return f"<={bound * 1000:g} ms"
    return f">{finite[-1] * 1000:g} ms"


def lagged_over(before: Mapping[float, float], after: Mapping[float, float], ms: float) -> int:
    """Samples between two scrapes whose lag exceeded ``ms`` (a bucket bound)."""
    bound = ms / 1000
    total = after.get(float("inf"), 0.0) - before.get(float("inf"), 0.0)
    within = after.get(bound, 0.0) - before.get(bound, 0.0)
    return int(total - within)


# -- output ------------------------------------------------------------------------------------


def percentile(values: Sequence[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[k]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    print(f"\n## {title}")
    print(
        "  ".join(
            h.ljust(w) if i == 0 else h.rjust(w)
            for i, (h, w) in enumerate(zip(headers, widths, strict=True))
        )
    )
    for row in cells:
        print(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    sys.stdout.flush()


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if value != value:
            return "-"
        return (
            f"{value:,.0f}"
            if abs(value) >= 100
            else f"{value:.3g}"
            if abs(value) < 1
            else f"{value:.1f}"
        )
    return str(value)
