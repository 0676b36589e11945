"""``image_qc``: should this scan be analysed, or sent back to the scanner?"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import marshmallow
import numpy as np
from marshmallow import fields, validate

from primaa import Algorithm, AlgorithmResult, Progress, RGBImage, TileMeasurements
from primaa_qc import __version__, measures
from primaa_qc.combine import combine_tiles, verdict

#: Full-resolution focus tiles: big enough for a few nuclei, small enough to stay cheap.
FOCUS_TILE = 512
#: At most this many tiles are measured for focus, the ones with the most tissue.
FOCUS_TILE_COUNT = 16
#: Rows of the working image processed at a time by the colour measures.
STRIP_ROWS = 256


class QCParameters(marshmallow.Schema):
    """Thresholds of the QC verdict; every measurement is returned whatever they are."""

    blur_threshold = fields.Float(
        load_default=60.0,
        validate=validate.Range(min=0.0),
        metadata={
            "description": "A scan whose focus score (variance of the Laplacian of the grey "
            "image, median over full-resolution tissue tiles) is below this is flagged "
            "blurry. Sharp 20-40x H&E scores in the hundreds; a Gaussian blur of 1.5 px "
            "brings it below 40."
        },
    )
    tissue_od_threshold = fields.Float(
        load_default=0.15,
        validate=validate.Range(min=0.0, max=3.0),
        metadata={
            "description": "A pixel counts as tissue when its optical density exceeds this "
            "in at least one channel (0.15 is Macenko's usual value; glass is below 0.05)."
        },
    )
    min_tissue_fraction = fields.Float(
        load_default=0.1,
        validate=validate.Range(min=0.0, max=1.0),
        metadata={"description": "Fail the scan when less than this fraction is tissue."},
    )
    max_saturated_fraction = fields.Float(
        load_default=0.01,
        validate=validate.Range(min=0.0, max=1.0),
        metadata={
            "description": "Fail the scan when more than this fraction is ink (green, cyan, "
            "light-blue hues) or near-black."
        },
    )
    working_size = fields.Integer(
        load_default=2048,
        validate=validate.Range(min=256, max=16384),
        metadata={
            "description": "Colour measures run on a copy downsampled so its longest side "
            "is at most this many pixels; focus always uses full-resolution tiles."
        },
    )


class ImageQC(Algorithm):
    """Quality control of a bright-field H&E image, as numbers and a pass/fail verdict."""

    name: ClassVar[str] = "image_qc"
    version: ClassVar[str] = __version__
    summary: ClassVar[str] = (
        "Scan quality control for H&E: focus, tissue fraction, stain intensity, ink."
    )
    description: ClassVar[str] = (
        "Measures what a lab checks before trusting an analysis: focus (variance of the "
        "Laplacian and a contrast-independent gradient energy, on full-resolution tiles "
        "with the most tissue), the fraction of the image that is tissue rather than glass, "
        "mean haematoxylin and eosin optical density over tissue (Ruifrok-Johnston colour "
        "deconvolution), brightness and RMS contrast, and the fraction of ink or near-black "
        "pixels. qc_pass is 1 when the scan is in focus, has enough tissue and little ink. "
        "Returns measurements only (no geometry). On a whole-slide image it runs on tiles "
        "at 0.5 µm/px across every worker, the glass left out, and the tiles' measurements "
        "are averaged by area (focus: a median weighted by tissue)."
    )
    Parameters: ClassVar[type[marshmallow.Schema]] = QCParameters
    default_timeout: ClassVar[float | None] = 120.0
    #: Slides: tiles at 20x, where focus thresholds are calibrated. Every measure is
    #: local (a pixel's colour, a 3 px Laplacian), so tiles need no border.
    mpp: ClassVar[float | None] = 0.5
    border_um: ClassVar[float] = 0.0

    def run(
        self, image: RGBImage, parameters: Mapping[str, Any], progress: Progress
    ) -> AlgorithmResult:
        progress(0.0)
        working, factor = measures.downsample(image, int(parameters["working_size"]))
        progress(0.1)
        stats = measures.ColourStats(float(parameters["tissue_od_threshold"]))
        masks = [
            stats.add(working[top : top + STRIP_ROWS])
            for top in range(0, working.shape[0], STRIP_ROWS)
        ]
        mask = np.concatenate(masks, axis=0)
        progress(0.4)

        corners = measures.focus_tiles(image.shape, FOCUS_TILE, mask, factor, FOCUS_TILE_COUNT)
        scores: list[measures.Focus] = []
        for done, (top, left) in enumerate(corners, start=1):
            tile = image[top : top + FOCUS_TILE, left : left + FOCUS_TILE]
            scores.append(measures.focus(measures.grey(tile)))
            progress(0.4 + 0.6 * done / len(corners))
        laplacian = statistics.median(s.laplacian_variance for s in scores)
        energy = statistics.median(s.gradient_energy for s in scores)

        values = {
            "focus_laplacian_variance": laplacian,
            "focus_gradient_energy": energy,
            **stats.measurements(),
        }
        progress(1.0)
        measurements = {**values, **verdict(values, parameters)}
        return AlgorithmResult(geometry=None, measurements=measurements)

    def combine(
        self, tiles: Sequence[TileMeasurements], parameters: Mapping[str, Any]
    ) -> dict[str, float]:
        """A slide's measurements from its tiles', and the verdict on them."""
        values = combine_tiles(tiles)
        return {**values, **verdict(values, parameters)}
