"""Training tiles, cross-validation folds and augmentation for the nucleus-centre network.

The dev sets are read with ``bench/nuclei_accuracy.py`` (same files and organs as the
bench scores). Augmentation covers what differs between slides: orientation, stain
(haematoxylin and eosin amounts, separately), brightness, focus and nucleus size.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
from primaa_nuclei_net.detector import STRIDE
from primaa_nuclei_net.scale import DEFAULT_IMAGE_MPP, NET_MPP, resize
from scipy import ndimage

REPO = Path(__file__).resolve().parents[3]
#: The bench's loader reads the dev sets (``load_tiles``), and ``evaluate.py`` scores with it.
sys.path.insert(0, str(REPO / "bench"))

#: Target heat map: a Gaussian of this sigma (output px, 1 µm/px) at each true centre; a
#: narrower one, sampled at 1 µm, would peak well below 1 between two pixels.
SIGMA = 1.0
#: Nucleus size is varied by this factor range (log-uniform) when cropping.
SCALE_RANGE = (0.8, 1.25)
#: With teachers, the target is this mix of the annotations' Gaussians and the teachers'
#: mean heat map (knowledge distillation: one network learns what an ensemble predicts).
ANNOTATION_WEIGHT = 0.5

# Ruifrok & Johnston H, E and residual optical-density vectors (rows), for stain jitter.
_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
_HED = _HED / np.linalg.norm(_HED, axis=1, keepdims=True)
_HED_INV = np.linalg.inv(_HED)


@dataclasses.dataclass(frozen=True)
class Tile:
    name: str
    dev_set: str
    group: str
    organ: str
    image: npt.NDArray[np.uint8]
    points: npt.NDArray[np.float64]


def load_tiles(folders: list[Path]) -> list[Tile]:
    """Every tile of the folders; ``group`` is the slide (TCGA patient-site), for folds."""
    # Here, not at the top: the bench brings scikit-image, which the patch sampling (and
    # its test, in the plugin's test environment) does without.
    from nuclei_accuracy import load_dataset, organs

    tiles = []
    for folder in folders:
        tissue = organs(folder)
        for name, image, truth in load_dataset(folder):
            organ = tissue.get(name, "brain")
            tiles.append(Tile(name, folder.name, name[:12], organ, image, truth))
    return tiles


def assign_folds(tiles: list[Tile], k: int) -> dict[str, int]:
    """Fold of each tile: whole slides per fold, organs spread over the folds in each set."""
    fold: dict[str, int] = {}
    for dev_set in sorted({t.dev_set for t in tiles}):
        members = [t for t in tiles if t.dev_set == dev_set]
        groups = sorted({(t.organ, t.group) for t in members})
        sizes = {g: sum(1 for t in members if (t.organ, t.group) == g) for g in groups}
        load = [0] * k
        if len({organ for organ, _ in groups}) > 1:
            order = groups  # organ by organ, round robin: each fold gets every organ it can
            for index, g in enumerate(order):
                target = min(range(k), key=lambda f: (load[f], (index + f) % k))
                for t in members:
                    if (t.organ, t.group) == g:
                        fold[t.name] = target
                load[target] += sizes[g]
        else:
            for g in sorted(groups, key=lambda g: -sizes[g]):
                target = min(range(k), key=lambda f: load[f])
                for t in members:
                    if (t.organ, t.group) == g:
                        fold[t.name] = target
                load[target] += sizes[g]
    return fold


def heat_target(points: npt.NDArray[np.float64], size: int) -> npt.NDArray[np.float32]:
    """Maximum of unit Gaussians at ``[x, y]`` points, on a ``size`` square."""
    target = np.zeros((size, size), dtype=np.float32)
    reach = int(np.ceil(3 * SIGMA))
    for x, y in points:
        c0, c1 = max(0, int(x) - reach), min(size, int(x) + reach + 2)
        r0, r1 = max(0, int(y) - reach), min(size, int(y) + reach + 2)
        if c0 >= c1 or r0 >= r1:
            continue
        rows = np.arange(r0, r1)[:, None]
        columns = np.arange(c0, c1)[None, :]
        blob = np.exp(-((rows - y) ** 2 + (columns - x) ** 2) / (2 * SIGMA * SIGMA))
        np.maximum(target[r0:r1, c0:c1], blob, out=target[r0:r1, c0:c1])
    return target


def teacher_crop(
    heat: npt.NDArray[np.float32], top: int, left: int, side: int, size: int
) -> npt.NDArray[np.float32]:
    """The teachers' heat map over a ``side`` square of the tile at ``(top, left)``, on the
    ``size`` square grid of a target (linear interpolation).

    ``heat`` is what the teachers predict for the whole tile at the default scale, pixel
    centres aligned as everywhere here: ``(tile_px + 0.5) * scale - 0.5``.
    """
    scale = DEFAULT_IMAGE_MPP / NET_MPP / STRIDE  # heat-map px per tile px
    centres = (np.arange(size) + 0.5) * side / size - 0.5  # target pixels, in tile px
    rows = (top + centres + 0.5) * scale - 0.5
    columns = (left + centres + 0.5) * scale - 0.5
    grid = np.meshgrid(rows, columns, indexing="ij")
    crop = ndimage.map_coordinates(heat, grid, order=1, mode="nearest")
    return np.asarray(crop, dtype=np.float32)


def jitter_colour(
    patch: npt.NDArray[np.uint8], rng: np.random.Generator
) -> npt.NDArray[np.float32]:
    """Stain amounts scaled and shifted per stain (HED space), then brightness and contrast."""
    od = -np.log((patch.astype(np.float32) + 1.0) / 256.0)
    stains = od.reshape(-1, 3) @ _HED_INV
    stains = stains * rng.uniform(0.8, 1.2, 3) + rng.uniform(-0.04, 0.04, 3)
    od = (stains @ _HED).reshape(patch.shape)
    rgb = np.clip(256.0 * np.exp(-od) - 1.0, 0.0, 255.0) / 255.0
    rgb = (rgb - 0.5) * rng.uniform(0.85, 1.15) + 0.5 + rng.uniform(-0.06, 0.06)
    return np.clip(rgb, 0.0, 1.0).astype(np.float32)


def sample_patch(
    tile: Tile,
    size: int,
    rng: np.random.Generator,
    teacher: npt.NDArray[np.float32] | None = None,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """A random augmented ``(3, size, size)`` input at ~0.5 µm/px and its heat-map target.

    The target is at the network's output resolution: ``size // STRIDE`` square; with a
    ``teacher`` heat map of the tile, mixed with it (:data:`ANNOTATION_WEIGHT`). The
    teachers saw the tile unaugmented, so their heat does not follow the colour jitter.
    """
    # Half the patches at the default scale exactly, which the plugin reduces by boxes.
    scale = 1.0 if rng.random() < 0.5 else float(np.exp(rng.uniform(*np.log(SCALE_RANGE))))
    factor = DEFAULT_IMAGE_MPP / NET_MPP * scale  # network px per tile px
    side = min(round(size / factor), *tile.image.shape[:2])
    top = int(rng.integers(0, tile.image.shape[0] - side + 1))
    left = int(rng.integers(0, tile.image.shape[1] - side + 1))
    patch = resize(tile.image[top : top + side, left : left + side], size, size)
    ratio = size / side
    points = (tile.points - [left, top] + 0.5) * ratio / STRIDE - 0.5
    target = heat_target(points, size // STRIDE)
    if teacher is not None:
        taught = teacher_crop(teacher, top, left, side, size // STRIDE)
        target = ANNOTATION_WEIGHT * target + (1.0 - ANNOTATION_WEIGHT) * taught
    image = jitter_colour(patch, rng)
    if rng.random() < 0.2:
        sigma = rng.uniform(0.3, 1.0)
        image = ndimage.gaussian_filter(image, (sigma, sigma, 0))
    turns = int(rng.integers(0, 4))
    image, target = np.rot90(image, turns), np.rot90(target, turns)
    if rng.random() < 0.5:
        image, target = image[:, ::-1], target[:, ::-1]
    return np.ascontiguousarray(image.transpose(2, 0, 1)), np.ascontiguousarray(target)
