"""The load generator used when ``wrk`` is not installed: aiohttp, in its own process.

``CONNECTIONS`` clients each send one request after another (closed loop, like
wrk) until the duration is up or ``--max-requests`` were sent; prints one JSON
summary line in wrk's fields. Being Python, it saturates sooner than wrk:
compare targets measured with the same tool only.

    python -m bench.loadgen URL (--paths FILE | --post PATH --body FILE) [--duration S]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from pathlib import Path

import aiohttp


async def _load(args: argparse.Namespace, paths: list[str], body: bytes) -> dict[str, object]:
    headers = {"Content-Type": "application/json"}
    latencies: list[float] = []
    errors = 0
    sent = 0
    deadline = time.monotonic() + args.duration
    connector = aiohttp.TCPConnector(limit=args.connections)
    timeout = aiohttp.ClientTimeout(total=10)

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal errors, sent
        while time.monotonic() < deadline and sent < args.max_requests:
            sent += 1
            started = time.perf_counter()
            try:
                if paths:
                    response = await session.get(args.url + random.choice(paths))
                else:
                    response = await session.post(args.url + args.post, data=body, headers=headers)
                async with response:
                    await response.read()
                    if response.status >= 400:
                        errors += 1
            except (aiohttp.ClientError, TimeoutError):
                errors += 1
            latencies.append(time.perf_counter() - started)

    started = time.monotonic()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(client(session) for _ in range(args.connections)))
    seconds = time.monotonic() - started
    latencies.sort()

    def pct(p: float) -> float:
        if not latencies:
            return float("nan")
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000

    return {
        "tool": "aiohttp",
        "requests": len(latencies),
        "seconds": round(seconds, 3),
        "errors": errors,
        "p50_ms": round(pct(50), 3),
        "p99_ms": round(pct(99), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--paths", help="file of GET paths, one per line, taken at random")
    parser.add_argument("--post", help="path to POST --body to")
    parser.add_argument("--body", help="file holding the JSON body")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--max-requests", type=int, default=5_000_000)
    args = parser.parse_args()
    if not args.paths and not (args.post and args.body):
        parser.error("give --paths, or --post and --body")
    paths = [p for p in Path(args.paths).read_text().splitlines() if p] if args.paths else []
    body = Path(args.body).read_bytes() if args.body else b""
    print(json.dumps(asyncio.run(_load(args, paths, body))))


if __name__ == "__main__":
    main()
