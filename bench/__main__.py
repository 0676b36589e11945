"""Every bench, one after another, each printing its table (`replicas` needs PostgreSQL).

    python -m bench [--quick] [--only NAME ...]

Run from the repository root with the project installed. ``--quick`` is a smoke
run of a few minutes; the full run takes about 40 minutes (5 of them the memory
bench's sustained load). Each bench runs in its own process, so the algorithm
bench's pinning to one core touches nothing else.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys

from bench.harness import REPO, bench_env, load_tool

BENCHES = {
    "status_reads": ["bench.status_reads"],
    "submissions": ["bench.pipeline", "--only", "submissions"],
    "pipeline": ["bench.pipeline", "--only", "pipeline"],
    "memory": ["bench.memory"],
    "algorithms": ["bench.algorithms"],
    "slides": ["bench.slides"],
    "dask_executor": ["bench.dask_executor"],
    "replicas": ["bench.replicas"],
    "slide_jobs": ["bench.slide_jobs"],
    "decode_memory": ["bench.decode_memory"],
    "slide_targets": ["bench.slide_targets"],
}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run of every bench")
    parser.add_argument("--only", nargs="+", choices=list(BENCHES), help="run these benches")
    args = parser.parse_args()
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(
        f"# primaa benches, {now}: {os.cpu_count()} x {_cpu_model()}, Python"
        f" {platform.python_version()}, load from {load_tool()},"
        f" load average {os.getloadavg()[0]:.1f}{' (quick)' if args.quick else ''}"
    )
    failed = []
    for name in args.only or list(BENCHES):
        command = [sys.executable, "-m", *BENCHES[name], *(["--quick"] if args.quick else [])]
        sys.stdout.flush()
        if subprocess.run(command, cwd=REPO, env=bench_env(), check=False).returncode != 0:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
