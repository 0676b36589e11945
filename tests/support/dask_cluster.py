"""A real Dask cluster on loopback for the tests: ``dask scheduler`` and ``dask worker``
processes (each worker under its nanny, one thread), started as an operator would.

The processes get this checkout on ``PYTHONPATH``, as a deployment has primaa installed
on the scheduler and the workers; nothing of primaa is preloaded into the workers: the
service's worker plugin loads it.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from tests.support.env import child_env

#: How long a scheduler or a worker may take to start (imports on a loaded 2-CPU machine).
START_SECONDS = 60.0


class DaskCluster:
    def __init__(self, directory: Path, *, allowed_failures: int = 1) -> None:
        self.directory = directory
        self.scheduler_file = directory / "scheduler.json"
        self._env = child_env(
            # A task that killed this many workers + 1 fails as KilledWorker (default 3).
            {"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": str(allowed_failures)}
        )
        self._processes: list[subprocess.Popen[bytes]] = []
        self.address = ""

    def _spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = (self.directory / f"{name}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", *args],
            cwd=self.directory,
            env=self._env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self._processes.append(process)
        return process

    def start(self, workers: int = 2, *, port: int = 0) -> None:
        self.start_scheduler(port)
        for number in range(workers):
            self.add_worker(f"worker-{number}")

    def start_scheduler(self, port: int = 0) -> subprocess.Popen[bytes]:
        """A scheduler (on ``port``, or any free one); returns once it listens."""
        self.scheduler_file.unlink(missing_ok=True)
        scheduler = self._spawn(
            "scheduler",
            "distributed.cli.dask_scheduler",
            "--host=127.0.0.1",
            f"--port={port}",
            "--dashboard-address=127.0.0.1:0",
            f"--scheduler-file={self.scheduler_file}",
        )
        deadline = time.monotonic() + START_SECONDS
        while not self.scheduler_file.exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"no scheduler after {START_SECONDS} s: {self.log('scheduler')}")
            time.sleep(0.1)
        time.sleep(0.1)  # the file is written whole, but give the writer its close
        self.address = json.loads(self.scheduler_file.read_text())["address"]
        return scheduler

    def add_worker(self, name: str, *options: str) -> subprocess.Popen[bytes]:
        """A ``dask worker`` (under its nanny, one thread) with more ``options``."""
        return self._spawn(
            name,
            "distributed.cli.dask_worker",
            f"--scheduler-file={self.scheduler_file}",
            "--host=127.0.0.1",
            "--nthreads=1",
            "--dashboard-address=127.0.0.1:0",
            f"--name={name}",
            *options,
        )

    def worker_processes(self) -> list[psutil.Process]:
        """The worker processes alive now: the nannies' children spawned by multiprocessing
        (not its resource tracker)."""
        nannies = [
            p
            for p in self._processes
            if "distributed.cli.dask_worker" in p.args and p.poll() is None
        ]
        return [
            child
            for p in nannies
            for child in psutil.Process(p.pid).children()
            if "spawn_main" in " ".join(child.cmdline())
        ]

    def log(self, name: str) -> str:
        path = self.directory / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def stop(self) -> None:
        """SIGTERM the workers (a nanny takes its worker with it) while the scheduler still
        answers them, then the scheduler; SIGKILL what is left after a while."""
        schedulers = [p for p in self._processes if "distributed.cli.dask_scheduler" in p.args]
        workers = [p for p in self._processes if p not in schedulers]
        children = [
            child
            for process in self._processes
            if process.poll() is None
            for child in psutil.Process(process.pid).children(recursive=True)
        ]
        for group in (workers, schedulers):
            for process in group:
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 15.0
            for process in group:
                try:
                    process.wait(max(deadline - time.monotonic(), 0.1))
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        for child in children:  # a worker whose nanny was killed
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
