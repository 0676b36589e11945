"""An algorithm's own slide measurements from its tiles' (``combine``), and the default
that keeps the merge's counts alone for algorithms written before it."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import pytest

from primaa import TileMeasurements
from primaa.execution.tile_results import TileResults
from primaa.imaging.slides import plan_tiles
from primaa.jobs.ports import TaskError
from primaa.plugins.algorithm import Algorithm, AlgorithmResult, Progress, RGBImage


class Measures(Algorithm):
    """Measures only; ``combine`` averages ``darkness`` over the slide by tile area."""

    name: ClassVar[str] = "measures"
    version: ClassVar[str] = "1"
    summary: ClassVar[str] = "a number per tile"
    mpp: ClassVar[float | None] = 0.5

    seen: list[int]

    def run(self, image: RGBImage, parameters: Any, progress: Progress) -> AlgorithmResult:
        raise AssertionError("not run here")

    def combine(
        self, tiles: Sequence[TileMeasurements], parameters: Mapping[str, Any]
    ) -> dict[str, float]:
        self.seen = [int(tile.measurements["index"]) for tile in tiles]
        area = sum(tile.area for tile in tiles)
        darkness = sum(tile.area * tile.measurements["darkness"] for tile in tiles) / area
        return {"darkness": darkness * parameters["scale"], "tiles": -1.0}


class Older(Algorithm):
    """Written before ``combine`` existed: it inherits the default."""

    name: ClassVar[str] = "older"
    version: ClassVar[str] = "1"
    summary: ClassVar[str] = "a number per tile"
    mpp: ClassVar[float | None] = 0.5

    def run(self, image: RGBImage, parameters: Any, progress: Progress) -> AlgorithmResult:
        raise AssertionError("not run here")


def test_combine_gets_every_tile_in_order_weighted_by_its_level0_core_area() -> None:
    tiles = plan_tiles((250, 100), downsample=2.0, tile_size=50)
    areas = [(t.core[2] - t.core[0]) * (t.core[3] - t.core[1]) * 4.0 for t in tiles]
    assert len(set(areas)) > 1, "tiles of unequal area, so weights matter"
    algorithm = Measures()
    merged = TileResults((250, 100), functools.partial(algorithm.combine, parameters={"scale": 2}))
    darkness = [float(index % 2) for index in range(len(tiles))]
    for tile in reversed(tiles):  # as they may arrive
        merged.add(
            tile,
            AlgorithmResult(
                geometry=None, measurements={"index": tile.index, "darkness": darkness[tile.index]}
            ),
        )
    measurements = merged.result().measurements
    assert algorithm.seen == list(range(len(tiles))), "in tile order, whatever the arrival"
    expected = sum(a * d for a, d in zip(areas, darkness, strict=True)) / sum(areas)
    assert measurements["darkness"] == pytest.approx(2 * expected)
    assert measurements["tiles"] == len(tiles), "the merge's own keys win"
    assert measurements["analysed_megapixels"] == pytest.approx(250 * 100 / 1e6, abs=1e-3)


def test_an_algorithm_without_combine_keeps_the_merges_measurements_only() -> None:
    tiles = plan_tiles((250, 100), downsample=2.0, tile_size=50)
    merged = TileResults((250, 100), functools.partial(Older().combine, parameters={}))
    for tile in tiles:
        merged.add(tile, AlgorithmResult(geometry=None, measurements={"darkness": 1.0}))
    assert set(merged.result().measurements) == {"count", "tiles", "analysed_megapixels"}


def test_a_failing_combine_fails_the_job_saying_so() -> None:
    (tile,) = plan_tiles((40, 40), downsample=1.0, tile_size=64)
    merged = TileResults((40, 40), functools.partial(Measures().combine, parameters={}))
    merged.add(tile, AlgorithmResult(geometry=None, measurements={"index": 0.0}))
    with pytest.raises(TaskError, match="combining the measurements of 1 tiles failed: KeyError"):
        merged.result()
