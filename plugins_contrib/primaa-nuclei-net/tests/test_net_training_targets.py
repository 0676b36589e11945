"""The training targets: a teacher's heat map is cropped onto the same pixels as the
annotations, so distillation teaches the network where the nuclei are, not beside them."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))

import data


def _tile() -> data.Tile:
    points = np.random.default_rng(0).uniform(20.0, 490.0, (60, 2))
    image = np.full((512, 512, 3), 200, dtype=np.uint8)
    return data.Tile("tile", "set", "slide", "brain", image, points)


def test_a_teachers_crop_lands_on_the_annotations() -> None:
    tile = _tile()
    # A perfect teacher: its heat-map pixel q is centred on tile pixel 4q + 1.5 (two 2x
    # reductions, pixel centres aligned), and it draws the annotations' Gaussians there.
    teacher = data.heat_target((tile.points - 1.5) / 4.0, 128)
    weight = data.ANNOTATION_WEIGHT
    for seed in range(24):  # patches at the default scale and rescaled, turned, flipped
        _, alone = data.sample_patch(tile, 128, np.random.default_rng(seed))
        _, mixed = data.sample_patch(tile, 128, np.random.default_rng(seed), teacher)
        crop = (mixed - weight * alone) / (1.0 - weight)
        errors = {
            (dy, dx): float(np.square(np.roll(crop, (dy, dx), (0, 1)) - alone)[4:-4, 4:-4].sum())
            for dy in (-1, 0, 1)
            for dx in (-1, 0, 1)
        }
        assert min(errors, key=errors.__getitem__) == (0, 0), (seed, errors)
        assert np.abs(crop - alone).max() < 0.25, seed  # linear interpolation of a sigma-1 peak
