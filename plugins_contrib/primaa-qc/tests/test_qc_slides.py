"""``image_qc`` on a whole-slide image: tiles across the workers, one slide measurement.

The slide is built here from a real Aperio scan (primaa's ``CMU-1-Small-Region.svs``,
CC0): a tissue-dense region as a JPEG-tiled pyramidal TIFF at 0.25 µm/px, so
``image_qc`` (0.5 µm/px) reads its second level in four tiles. The reference is
``image_qc`` run once on the same pixels read whole through primaa's slide reader.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pyvips
from primaa_qc import measures
from primaa_qc.algorithm import ImageQC
from primaa_qc.combine import combine_tiles, weighted_median
from qc_synthetic import flat, nuclei_texture

from primaa import RGBImage, TileMeasurements
from primaa.execution.pool import ProcessPoolRunner
from primaa.execution.slide_plan import SlidePlan
from primaa.execution.tiling import TilingExecutor
from primaa.imaging.slides import open_slide
from primaa.jobs.ports import Task
from primaa.plugins.registry import load_registry

SVS = Path(__file__).resolve().parents[3] / "tests" / "data" / "CMU-1-Small-Region.svs"
#: A tissue-dense region of it (level-0 x, y, width, height); sides divisible by 4, so
#: the next levels are exact halves and a tile reads the pixels the whole read has.
REGION = (600, 1500, 1600, 1464)
TILE_SIZE = 512
#: Colour measures are sums over the same pixels, only added up in another order.
SUMS_REL = 1e-9
COLOUR = (
    "tissue_fraction",
    "hematoxylin_od_mean",
    "eosin_od_mean",
    "brightness",
    "contrast",
    "pen_mark_fraction",
    "dark_fraction",
    "saturated_fraction",
)
FOCUS = ("focus_laplacian_variance", "focus_gradient_energy")


def _slide(path: Path, *, blur: float = 0.0) -> Path:
    svs = pyvips.Image.new_from_file(str(SVS))[:3]
    # Pixels only: the SVS's description would make OpenSlide read it as Aperio at 0.499.
    region = pyvips.Image.new_from_array(svs.crop(*REGION).numpy(), interpretation="srgb")
    if blur:
        region = region.gaussblur(blur).cast("uchar")
    region.tiffsave(
        str(path),
        tile=True,
        pyramid=True,
        compression="jpeg",
        Q=90,
        tile_width=256,
        tile_height=256,
        xres=4000.0,
        yres=4000.0,
        resunit="cm",
    )
    return path


@pytest.fixture(scope="module")
def slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _slide(tmp_path_factory.mktemp("qc-slide") / "cmu.tif")


@pytest.fixture(scope="module")
def blurred_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _slide(tmp_path_factory.mktemp("qc-blurred") / "cmu-blurred.tif", blur=8.0)


async def _run(path: Path, scratch: Path, parameters: Mapping[str, Any]) -> tuple[Any, Any]:
    registry = load_registry()
    pool = ProcessPoolRunner(
        workers=2, cancel_dir=scratch / "cancel", max_pixels=10**8, log_format="json"
    )
    pool.start()
    try:
        tiling = TilingExecutor(
            pool, registry.get, workers=2, max_pixels=10**8, tile_size=TILE_SIZE
        )
        task = Task("qc", "image_qc", path, parameters)
        return await tiling.plan(task), await tiling.run(task)
    finally:
        await pool.close()


def _whole(path: Path, plan: SlidePlan) -> RGBImage:
    with open_slide(path) as opened:
        width, height = (math.ceil(side / plan.downsample) for side in opened.dimensions)
        return opened.read_region(0, 0, width, height, downsample=plan.downsample)


def _sub_tile_scores(image: RGBImage, name: str) -> list[float]:
    """Each focus sub-tile's score in a whole-image run, the values its median is taken of."""
    mask = measures.tissue_mask(image, 0.15)
    corners = measures.focus_tiles(image.shape, 512, mask, 1, 16)
    scores = [measures.focus(measures.grey(image[y : y + 512, x : x + 512])) for y, x in corners]
    return [float(getattr(score, name.removeprefix("focus_"))) for score in scores]


@pytest.fixture
def parameters() -> dict[str, Any]:
    # Whole and tiles both measure colour at full resolution (no working copy).
    return dict(ImageQC.Parameters().load({"working_size": 4096}))


def test_slide_in_tiles_measures_what_the_same_pixels_read_whole_do(
    slide: Path, tmp_path: Path, parameters: dict[str, Any]
) -> None:
    plan, result = asyncio.run(_run(slide, tmp_path, parameters))
    assert plan is not None
    assert plan.downsample == 2.0, "0.5 µm/px: the second level"
    assert len(plan.tiles) == 4, "every tile has tissue: none left out as glass"
    on_slide = result.measurements
    assert on_slide["tiles"] == 4
    assert result.geometry is None

    image = _whole(slide, plan)
    whole = ImageQC().run(image, parameters, lambda fraction: None).measurements
    for name in COLOUR:
        assert on_slide[name] == pytest.approx(whole[name], rel=SUMS_REL), name
    # Focus is a median over 512 px sub-tiles: on the slide, of each tile's, weighted by
    # tissue. It samples other sub-tiles than the whole image's median does, so it may
    # differ by what a median of those sub-tiles can be: within their interquartile range.
    for name in FOCUS:
        low, high = np.percentile(_sub_tile_scores(image, name), [25, 75])
        assert low <= on_slide[name] <= high, (name, on_slide[name], whole[name], low, high)
    assert on_slide["is_blurry"] == whole["is_blurry"] == 0.0
    assert on_slide["qc_pass"] == whole["qc_pass"]


def test_a_blurred_slide_is_flagged_blurry(
    blurred_slide: Path, tmp_path: Path, parameters: dict[str, Any]
) -> None:
    _, result = asyncio.run(_run(blurred_slide, tmp_path, parameters))
    assert result.measurements["is_blurry"] == 1.0, result.measurements
    assert result.measurements["qc_pass"] == 0.0


def _tile(image: RGBImage) -> TileMeasurements:
    algorithm = ImageQC()
    loaded = algorithm.Parameters().load({})
    measured = algorithm.run(image, loaded, lambda fraction: None).measurements
    return TileMeasurements(measured, float(image.shape[0] * image.shape[1]))


def test_halves_combine_into_the_whole_images_colour_measures() -> None:
    """Unequal halves, one mostly glass: weights by area and by tissue both matter."""
    image = np.concatenate([nuclei_texture(256), flat((240, 235, 240), 96, 256)], axis=0)
    image[200:, :64] = nuclei_texture(256, seed=1)[:152, :64]
    whole = ImageQC().run(image, ImageQC.Parameters().load({}), lambda fraction: None)
    combined = combine_tiles([_tile(image[:150]), _tile(image[150:])])
    for name in COLOUR:
        assert combined[name] == pytest.approx(whole.measurements[name], rel=1e-6), name


def test_no_tiles_means_no_tissue_and_a_failed_scan() -> None:
    algorithm = ImageQC()
    measured = algorithm.combine([], algorithm.Parameters().load({}))
    assert measured["tissue_fraction"] == 0.0
    assert measured["qc_pass"] == 0.0


def test_weighted_median() -> None:
    assert weighted_median([5.0, 1.0, 3.0], [1.0, 1.0, 1.0]) == 3.0
    assert weighted_median([5.0, 1.0, 3.0], [0.1, 0.1, 5.0]) == 3.0
    assert weighted_median([5.0, 1.0], [3.0, 1.0]) == 5.0
    assert weighted_median([5.0, 1.0], [0.0, 0.0]) == 1.0, "no weight: every value counts"
    assert weighted_median([], []) == 0.0
