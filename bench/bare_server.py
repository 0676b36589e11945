"""The yardstick for status reads: a bare aiohttp handler answering the same JSON from a dict.

It rebuilds the seeded jobs (``bench.harness.seeded_job``) and serves the very
bodies primaa serves for them, so the difference from primaa is the cost of
the store read, the middlewares, metrics and logging.

    python -m bench.bare_server --port PORT --jobs N
"""

from __future__ import annotations

import argparse
import json
import uuid
from typing import Any

from aiohttp import web

from bench.harness import seeded_job
from primaa.api.present import legacy_status, present_job
from primaa.fastjson import dumps

STATUS: web.AppKey[dict[str, dict[str, Any]]] = web.AppKey("status", dict)
JOBS: web.AppKey[dict[str, dict[str, Any]]] = web.AppKey("jobs", dict)


async def status(request: web.Request) -> web.Response:
    body = request.app[STATUS].get(request.match_info["job_id"])
    if body is None:
        return web.json_response({"code": 404, "status": "NotFound"}, status=404)
    return web.json_response(body)


async def job(request: web.Request) -> web.Response:
    body = request.app[JOBS].get(request.match_info["job_id"])
    if body is None:
        return web.json_response({"code": 404, "error": "not found"}, status=404)
    return web.json_response(body)


async def submit(request: web.Request) -> web.Response:
    await request.json()
    return web.json_response(
        {"code": 200, "job_id": str(uuid.uuid4()), "status": "Pending", "error": None}
    )


async def ready(_: web.Request) -> web.Response:
    return web.Response(text="ok")


def build(count: int) -> web.Application:
    app = web.Application()
    app[STATUS] = {}
    app[JOBS] = {}
    for index in range(count):
        seeded, delivery = seeded_job(index)
        app[STATUS][seeded.job_id] = legacy_status(seeded.job_id, seeded.status, seeded.error)
        # Through JSON once: primaa's bodies hold datetimes its encoder formats.
        body = present_job(seeded, [delivery] if delivery else [])
        app[JOBS][seeded.job_id] = json.loads(dumps(body))
    app.router.add_get("/status/{job_id}", status)
    app.router.add_get("/jobs/{job_id}", job)
    app.router.add_post("/job-submission", submit)
    app.router.add_get("/ready", ready)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--jobs", type=int, default=1000)
    args = parser.parse_args()
    web.run_app(build(args.jobs), host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
