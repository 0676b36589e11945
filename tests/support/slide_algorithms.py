"""Algorithms that run on slides, for exercising tiling with real workers.

``test_dots`` finds dark dots (planted on test slides at known positions) and
reports their centres; it can log each tile it starts, sleep, crash its worker
on a tile with a pure red pixel and fail on one with a pure green pixel. Its
``combine`` adds up what the tiles saw, as the slide's ``tile_dots``.
Loaded with the ``plugins`` setting (``tests.support.slide_algorithms``).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from marshmallow import Schema, fields
from scipy import ndimage

from primaa import (
    PIXEL_SIZE_UM,
    Algorithm,
    AlgorithmResult,
    Progress,
    RGBImage,
    TileMeasurements,
    hookimpl,
)


class DotParameters(Schema):
    seconds = fields.Float(load_default=0.0)
    log_dir = fields.String(load_default=None, allow_none=True)
    tag = fields.String(load_default="")


def _has(image: RGBImage, colour: tuple[int, int, int]) -> bool:
    return bool(np.all(image == np.array(colour, np.uint8), axis=2).any())


class Dots(Algorithm):
    name = "test_dots"
    version = "1"
    summary = "Centres of dark dots, tile by tile"
    Parameters = DotParameters
    mpp: ClassVar[float | None] = 0.5
    border_um: ClassVar[float] = 8.0

    def run(
        self, image: RGBImage, parameters: Mapping[str, Any], progress: Progress
    ) -> AlgorithmResult:
        started = time.time()
        if parameters["log_dir"]:
            record = f"{parameters['tag']} {os.getpid()} {started!r}\n"
            (Path(parameters["log_dir"]) / uuid.uuid4().hex).write_text(record)
        if _has(image, (255, 0, 0)):
            os._exit(3)
        if _has(image, (0, 255, 0)):
            raise ValueError("a green pixel")
        steps = 5
        for step in range(steps):
            time.sleep(parameters["seconds"] / steps)
            progress((step + 1) / steps)
        dark = image.max(axis=2) < 100
        labels, count = ndimage.label(dark)
        centres = ndimage.center_of_mass(dark, labels, range(1, count + 1))
        points = [[float(x), float(y)] for y, x in centres]
        return AlgorithmResult(
            geometry={"type": "MultiPoint", "coordinates": points},
            measurements={"count": float(count)},
            object_measurements=[
                {"pid": float(os.getpid()), "pixel_size_um": parameters.get(PIXEL_SIZE_UM) or 0.0}
                for _ in points
            ],
        )

    def combine(
        self, tiles: Sequence[TileMeasurements], parameters: Mapping[str, Any]
    ) -> dict[str, float]:
        return {
            "tile_dots": sum(tile.measurements["count"] for tile in tiles),
            "combined_megapixels": sum(tile.area for tile in tiles) / 1e6,
            "combined_pixel_size_um": parameters[PIXEL_SIZE_UM],
            "count": -1.0,
        }


@hookimpl
def primaa_algorithms() -> list[Algorithm]:
    return [Dots()]
