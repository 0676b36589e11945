"""Bench algorithms, loaded with ``PRIMAA_PLUGINS=bench.plugin`` (the repo on ``PYTHONPATH``).

``bench_noop`` is I/O-bound and does no work: a job of it costs exactly the
service's overhead (fetch, decode of a tiny image, store writes, callback).
``bench_sleep`` holds a worker process for ``seconds``: a job that is still
running when a replica is killed (``bench/replicas.py``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import marshmallow

from primaa import Algorithm, AlgorithmResult, AsyncAlgorithm, Progress, RGBImage, hookimpl


class Noop(AsyncAlgorithm):
    name = "bench_noop"
    version = "1"
    summary = "Do nothing, on the event loop: measures the service's own cost per job"

    async def run(
        self, image: RGBImage, parameters: Mapping[str, Any], progress: Progress
    ) -> AlgorithmResult:
        height, width = image.shape[:2]
        progress(1.0)
        return AlgorithmResult(
            geometry={"type": "MultiPoint", "coordinates": [[width / 2, height / 2]]},
            measurements={"width": float(width), "height": float(height)},
        )


class SleepParameters(marshmallow.Schema):
    seconds = marshmallow.fields.Float(
        load_default=0.2, validate=marshmallow.validate.Range(min=0, max=60)
    )


class Sleep(Algorithm):
    name = "bench_sleep"
    version = "1"
    summary = "Hold a worker process for `seconds`, reporting progress"
    Parameters = SleepParameters

    def run(
        self, image: RGBImage, parameters: Mapping[str, Any], progress: Progress
    ) -> AlgorithmResult:
        steps = 10
        for step in range(steps):
            time.sleep(parameters["seconds"] / steps)
            progress((step + 1) / steps)
        return AlgorithmResult(geometry={"type": "MultiPoint", "coordinates": []})


@hookimpl
def primaa_algorithms() -> list[Algorithm | AsyncAlgorithm]:
    return [Noop(), Sleep()]
