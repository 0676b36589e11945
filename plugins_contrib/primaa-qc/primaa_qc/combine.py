"""A slide's QC measurements from its tiles': the same numbers as on the slide read whole.

Every colour measure is a mean over pixels (or over tissue pixels), so the
slide's is the tiles' weighted by the pixels each mean was taken over: its core
area, times its tissue fraction for the stain means. Contrast (a standard
deviation) pools each tile's mean of squares, ``contrast² + brightness²``.
Read at the same resolution, these equal the whole image's up to rounding.

Focus is a median over the tissue-richest sub-tiles of each tile; the slide's is
the median of the tiles' scores weighted by their tissue area, so a tile of
glass with a speck of tissue weighs next to nothing. It samples the sub-tiles
differently from a whole image's top 16, so it is close to that, not equal.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from primaa import TileMeasurements

#: Means over all pixels: weighted by core area.
_AREA_MEANS = (
    "tissue_fraction",
    "brightness",
    "pen_mark_fraction",
    "dark_fraction",
    "saturated_fraction",
)
#: Means over tissue pixels: weighted by core area x tissue fraction.
_TISSUE_MEANS = ("hematoxylin_od_mean", "eosin_od_mean")
#: Medians over focus sub-tiles: a weighted median of the tiles'.
_FOCUS = ("focus_laplacian_variance", "focus_gradient_energy")


def weighted_median(values: Sequence[float], weights: Sequence[float]) -> float:
    """The value at half the total weight, values sorted (equal weights: the lower median).

    Without any weight (no tissue anywhere) every value counts the same.
    """
    if not values:
        return 0.0
    if sum(weights) <= 0.0:
        weights = [1.0] * len(values)
    pairs = sorted(zip(values, weights, strict=True))
    half, running = sum(weights) / 2.0, 0.0
    for value, weight in pairs:
        running += weight
        if running >= half:
            return value
    return pairs[-1][0]


def combine_tiles(tiles: Sequence[TileMeasurements]) -> dict[str, float]:
    """The slide's measurements (everything but the verdict) from its tiles'."""
    area = sum(tile.area for tile in tiles)
    if area <= 0.0:
        return {name: 0.0 for name in (*_AREA_MEANS, *_TISSUE_MEANS, *_FOCUS, "contrast")}
    values = {
        name: sum(tile.area * tile.measurements[name] for tile in tiles) / area
        for name in _AREA_MEANS
    }
    tissue = [tile.area * tile.measurements["tissue_fraction"] for tile in tiles]
    total = sum(tissue)
    for name in _TISSUE_MEANS:
        values[name] = (
            sum(w * tile.measurements[name] for w, tile in zip(tissue, tiles, strict=True)) / total
            if total > 0.0
            else 0.0
        )
    square = (
        sum(
            tile.area * (tile.measurements["contrast"] ** 2 + tile.measurements["brightness"] ** 2)
            for tile in tiles
        )
        / area
    )
    values["contrast"] = math.sqrt(max(square - values["brightness"] ** 2, 0.0))
    for name in _FOCUS:
        values[name] = weighted_median([tile.measurements[name] for tile in tiles], tissue)
    return values


def verdict(values: Mapping[str, float], parameters: Mapping[str, Any]) -> dict[str, float]:
    """``is_blurry`` and ``qc_pass`` from the measurements and the job's thresholds."""
    is_blurry = values["focus_laplacian_variance"] < float(parameters["blur_threshold"])
    qc_pass = (
        not is_blurry
        and values["tissue_fraction"] >= float(parameters["min_tissue_fraction"])
        and values["saturated_fraction"] <= float(parameters["max_saturated_fraction"])
    )
    return {"is_blurry": float(is_blurry), "qc_pass": float(qc_pass)}
