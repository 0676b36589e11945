"""The numbers behind the QC verdict, as plain numpy functions so each can be tested alone.

Colour measures run on a downsampled copy (they are averages, which survive
downsampling); focus runs on full-resolution tiles, because downsampling makes
a blurred scan look sharp.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from primaa import RGBImage

FloatArray = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]

#: Optical density ``-log10((I + 1) / 256)`` of each uint8 intensity: a lookup
#: table keeps the image uint8 until a channel is actually needed as float.
OD_LUT: FloatArray = (-np.log10((np.arange(256, dtype=np.float32) + 1.0) / 256.0)).astype(
    np.float32
)

#: ITU-R BT.601 luma weights, the usual grey for focus measures.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)

#: Ruifrok & Johnston (2001) H&E optical-density vectors (R, G, B), as in ImageJ's
#: "H&E" colour deconvolution; the third row is their cross product, the residual.
_HEMATOXYLIN = np.array([0.644211, 0.716556, 0.266844])
_EOSIN = np.array([0.092789, 0.954111, 0.283111])


def _stain_matrix() -> npt.NDArray[np.float64]:
    rows = [_HEMATOXYLIN, _EOSIN, np.cross(_HEMATOXYLIN, _EOSIN)]
    matrix = np.array([row / np.linalg.norm(row) for row in rows])
    return np.asarray(np.linalg.inv(matrix))


#: Multiplying optical densities (rows of R, G, B) by this gives H, E, residual amounts.
RGB_TO_HE: npt.NDArray[np.float32] = _stain_matrix().astype(np.float32)

#: Hues (degrees) that neither haematoxylin nor eosin produce: green, cyan and
#: light-blue ink. H&E pixels sit between about 220 and 20 degrees.
_PEN_HUES = (40.0, 220.0)
#: Below this chroma a pixel is grey, whatever its hue.
_PEN_MIN_CHROMA = 0.3
#: A pixel whose brightest channel is below this (0-255) is near black: ink, folds, debris.
_DARK_LEVEL = 40


def downsample(image: RGBImage, max_side: int) -> tuple[RGBImage, int]:
    """Box-average by the smallest integer factor that fits ``max_side``; returns the factor.

    The reduction reads the uint8 image through a reshaped view, so no
    full-size float copy is made; the edge remainder (< factor px) is dropped.
    """
    factor = max(1, math.ceil(max(image.shape[:2]) / max_side))
    if factor == 1:
        return image, 1
    height, width = image.shape[0] // factor, image.shape[1] // factor
    blocks = image[: height * factor, : width * factor, :3].reshape(
        height, factor, width, factor, 3
    )
    mean = blocks.mean(axis=(1, 3), dtype=np.float32)
    return np.rint(mean, out=mean).astype(np.uint8), factor


def tissue_mask(image: RGBImage, od_threshold: float) -> BoolArray:
    """Tissue absorbs light in at least one channel; glass in none (Macenko's β rule)."""
    mask: BoolArray = OD_LUT[image[..., :3]].max(axis=2) > od_threshold
    return mask


def stain_amounts(image: RGBImage) -> FloatArray:
    """Haematoxylin and eosin optical density of each pixel, shape ``(n, 2)``.

    Negative amounts (noise, or colours outside the H&E plane) are clipped to 0,
    since a stain cannot be less than absent.
    """
    od = OD_LUT[image[..., :3]].reshape(-1, 3)
    amounts: FloatArray = np.clip(od @ RGB_TO_HE[:, :2], 0.0, None)
    return amounts


def grey(image: RGBImage) -> FloatArray:
    values: FloatArray = image[..., :3].astype(np.float32) @ _LUMA
    return values


def artefact_masks(image: RGBImage) -> tuple[BoolArray, BoolArray]:
    """Pixels of ink (hues H&E never produce) and near-black pixels.

    Blue ink overlaps haematoxylin's hue and is not told apart here.
    """
    rgb = image[..., :3].astype(np.float32)
    high = rgb.max(axis=2)
    spread = high - rgb.min(axis=2)
    chroma = spread / np.maximum(high, 1.0)
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    safe = np.maximum(spread, 1e-6)
    hue = 60.0 * np.where(
        high == red,
        ((green - blue) / safe) % 6.0,
        np.where(high == green, (blue - red) / safe + 2.0, (red - green) / safe + 4.0),
    )
    pen: BoolArray = (chroma > _PEN_MIN_CHROMA) & (hue >= _PEN_HUES[0]) & (hue < _PEN_HUES[1])
    dark: BoolArray = high < _DARK_LEVEL
    return pen, dark


@dataclasses.dataclass
class ColourStats:
    """Sums over the image, fed one strip at a time so no full-size float array exists."""

    od_threshold: float
    pixels: int = 0
    tissue: int = 0
    pen: int = 0
    dark: int = 0
    saturated: int = 0
    grey_sum: float = 0.0
    grey_square_sum: float = 0.0
    hematoxylin_sum: float = 0.0
    eosin_sum: float = 0.0

    def add(self, strip: RGBImage) -> BoolArray:
        """Accumulate one strip of rows; returns its tissue mask."""
        mask = tissue_mask(strip, self.od_threshold)
        pen, dark = artefact_masks(strip)
        values = grey(strip).astype(np.float64)
        amounts = stain_amounts(strip[mask]).astype(np.float64)
        self.pixels += mask.size
        self.tissue += int(mask.sum())
        self.pen += int(pen.sum())
        self.dark += int(dark.sum())
        self.saturated += int((pen | dark).sum())
        self.grey_sum += float(values.sum())
        self.grey_square_sum += float(np.square(values).sum())
        self.hematoxylin_sum += float(amounts[:, 0].sum())
        self.eosin_sum += float(amounts[:, 1].sum())
        return mask

    def measurements(self) -> dict[str, float]:
        """Fractions of the image, stain means over tissue, grey levels scaled to 0-1."""
        pixels = max(self.pixels, 1)
        tissue = max(self.tissue, 1)
        mean = self.grey_sum / pixels
        variance = max(self.grey_square_sum / pixels - mean * mean, 0.0)
        return {
            "tissue_fraction": self.tissue / pixels,
            "hematoxylin_od_mean": self.hematoxylin_sum / tissue,
            "eosin_od_mean": self.eosin_sum / tissue,
            "brightness": mean / 255.0,
            "contrast": math.sqrt(variance) / 255.0,
            "pen_mark_fraction": self.pen / pixels,
            "dark_fraction": self.dark / pixels,
            "saturated_fraction": self.saturated / pixels,
        }


@dataclasses.dataclass(frozen=True, slots=True)
class Focus:
    """Focus of one region: Laplacian variance (grey levels²) and normalised gradient energy."""

    laplacian_variance: float
    gradient_energy: float


def focus(grey_image: FloatArray) -> Focus:
    """Sharp edges give a strong Laplacian; blur removes exactly those high frequencies.

    The gradient energy is divided by the grey variance, so it does not depend on
    contrast or stain strength (unlike the Laplacian variance); it is in 1/px².
    """
    laplacian = ndimage.laplace(grey_image, mode="reflect")
    gy, gx = np.gradient(grey_image)
    variance = float(grey_image.var())
    energy = float(np.mean(gx * gx + gy * gy)) / variance if variance > 1e-6 else 0.0
    return Focus(float(laplacian.var()), energy)


def focus_tiles(
    shape: tuple[int, ...], tile: int, mask: BoolArray, factor: int, count: int
) -> list[tuple[int, int]]:
    """Top-left corners of the ``count`` full-resolution tiles with the most tissue.

    Glass is featureless, so tiles are ranked by tissue (read from the
    working-resolution ``mask``, ``factor`` times smaller); ties keep reading order.
    """
    height, width = shape[0], shape[1]
    corners = list(_grid(height, width, tile))
    fractions = []
    for top, left in corners:
        rows = slice(top // factor, (top + tile) // factor)
        columns = slice(left // factor, (left + tile) // factor)
        window = mask[rows, columns]
        fractions.append(float(window.mean()) if window.size else 0.0)
    order = sorted(range(len(corners)), key=lambda i: -fractions[i])
    return [corners[i] for i in order[:count]]


def _grid(height: int, width: int, tile: int) -> Iterator[tuple[int, int]]:
    """Tiles in reading order; the last row and column are flush with the far edges."""
    for top in _starts(height, tile):
        for left in _starts(width, tile):
            yield top, left


def _starts(length: int, tile: int) -> list[int]:
    starts = list(range(0, max(length - tile, 0) + 1, tile))
    if length > tile and starts[-1] != length - tile:
        starts.append(length - tile)
    return starts
