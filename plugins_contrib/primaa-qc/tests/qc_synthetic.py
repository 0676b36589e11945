"""Synthetic H&E-like images whose ground truth is known by construction."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from primaa import RGBImage

#: Eosin-stained stroma and haematoxylin-stained nuclei, as a scanner renders them.
PINK = (235, 160, 205)
PURPLE = (95, 55, 145)
GLASS = (245, 245, 243)


def nuclei_texture(size: int = 256, seed: int = 0) -> RGBImage:
    """Sharp-edged purple disks (nuclei, 4-10 px radius) on pink stroma."""
    rng = np.random.default_rng(seed)
    image = np.empty((size, size, 3), dtype=np.uint8)
    image[:] = PINK
    rows, columns = np.mgrid[:size, :size]
    for _ in range(size * size // 1000):
        centre_row, centre_column = rng.integers(0, size, 2)
        radius = rng.integers(4, 10)
        disk = (rows - centre_row) ** 2 + (columns - centre_column) ** 2 < radius * radius
        image[disk] = PURPLE
    return image


def blurred(image: RGBImage, sigma: float) -> RGBImage:
    """What an out-of-focus scanner does, to a first approximation."""
    channels = [ndimage.gaussian_filter(image[..., c].astype(np.float32), sigma) for c in range(3)]
    result: RGBImage = np.clip(np.rint(np.stack(channels, axis=-1)), 0, 255).astype(np.uint8)
    return result


def flat(colour: tuple[int, int, int], height: int = 200, width: int = 300) -> RGBImage:
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[:] = colour
    return image
