"""Colour deconvolution of bright-field images into stain optical densities.

Optical density (OD) is linear in stain amount (Beer-Lambert), so a pixel's OD
vector is a mix of the stains' OD vectors; inverting that mix separates
hematoxylin (nuclei) from eosin (cytoplasm, stroma). Because the conversion of
one channel value to OD is a fixed function of a ``uint8``, each stain channel
is computed with three 256-entry lookup tables and no per-pixel logarithm.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

#: Ruifrok & Johnston (2001) RGB optical-density vectors, the usual defaults for H&E.
HEMATOXYLIN: tuple[float, float, float] = (0.650, 0.704, 0.286)
EOSIN: tuple[float, float, float] = (0.072, 0.990, 0.105)

FloatImage = npt.NDArray[np.float32]


def optical_density_lut() -> npt.NDArray[np.float64]:
    """OD of each ``uint8`` value; ``255`` (white glass) maps to 0 and ``0`` stays finite."""
    values = np.arange(256, dtype=np.float64)
    return np.asarray(-np.log10((values + 1.0) / 256.0))


def stain_matrix(
    hematoxylin: Sequence[float] = HEMATOXYLIN, eosin: Sequence[float] = EOSIN
) -> npt.NDArray[np.float64]:
    """Rows: unit OD vectors of hematoxylin, eosin and a residual orthogonal to both.

    Raises ``ValueError`` when a vector is zero or the two are (nearly) parallel,
    because the mix could then not be inverted.
    """
    h = np.asarray(hematoxylin, dtype=np.float64)
    e = np.asarray(eosin, dtype=np.float64)
    if h.shape != (3,) or e.shape != (3,):
        raise ValueError("stain vectors need three components (R, G, B)")
    if not (np.all(np.isfinite(h)) and np.all(np.isfinite(e))):
        raise ValueError("stain vectors must be finite")
    h_norm, e_norm = float(np.linalg.norm(h)), float(np.linalg.norm(e))
    if h_norm < 1e-6 or e_norm < 1e-6:
        raise ValueError("stain vectors must not be zero")
    h, e = h / h_norm, e / e_norm
    residual = np.cross(h, e)
    r_norm = float(np.linalg.norm(residual))
    if r_norm < 0.05:
        raise ValueError("hematoxylin and eosin vectors are (nearly) parallel")
    return np.stack([h, e, residual / r_norm])


def stain_luts(
    hematoxylin: Sequence[float] = HEMATOXYLIN, eosin: Sequence[float] = EOSIN
) -> npt.NDArray[np.float32]:
    """Lookup tables of shape ``(3 stains, 3 channels, 256)``.

    Stain ``s`` of a pixel is ``sum(luts[s, c][pixel[c]] for c in RGB)``.
    """
    unmix = np.linalg.inv(stain_matrix(hematoxylin, eosin))  # columns: stains
    od = optical_density_lut()
    luts: npt.NDArray[np.float32] = np.einsum("cs,v->scv", unmix, od).astype(np.float32)
    return luts


def stain_channel(
    rgb: npt.NDArray[np.uint8], luts: npt.NDArray[np.float32], stain: int = 0
) -> FloatImage:
    """One stain's density (0 hematoxylin, 1 eosin, 2 residual), ``float32``, shape of the image."""
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise ValueError("expected an RGB image of shape (height, width, 3)")
    table = luts[stain]
    out: FloatImage = table[0][rgb[..., 0]]
    out += table[1][rgb[..., 1]]
    out += table[2][rgb[..., 2]]
    return out


def hematoxylin(
    rgb: npt.NDArray[np.uint8],
    hematoxylin_vector: Sequence[float] = HEMATOXYLIN,
    eosin_vector: Sequence[float] = EOSIN,
) -> FloatImage:
    """Hematoxylin density of an RGB ``uint8`` image (convenience wrapper)."""
    return stain_channel(rgb, stain_luts(hematoxylin_vector, eosin_vector), 0)


def eosin(
    rgb: npt.NDArray[np.uint8],
    hematoxylin_vector: Sequence[float] = HEMATOXYLIN,
    eosin_vector: Sequence[float] = EOSIN,
) -> FloatImage:
    """Eosin density of an RGB ``uint8`` image (convenience wrapper)."""
    return stain_channel(rgb, stain_luts(hematoxylin_vector, eosin_vector), 1)


def hematoxylin_reduced(
    rgb: npt.NDArray[np.uint8],
    factor: int,
    hematoxylin_vector: Sequence[float],
    eosin_vector: Sequence[float],
) -> FloatImage:
    """Hematoxylin OD of the image reduced by ``factor``, averaging light as optics would.

    Summing ``uint8`` blocks then looking the sum up in a table costs a few
    integer additions per pixel and one lookup per reduced pixel per channel.
    """
    h, w = (rgb.shape[0] // factor) * factor, (rgb.shape[1] // factor) * factor
    channels = rgb[:h, :w, :3]
    rows = channels[0::factor].astype(np.uint16)
    for dy in range(1, factor):
        rows += channels[dy::factor]
    blocks = rows.reshape(h // factor, w // factor, factor, 3)
    sums = blocks[:, :, 0].copy()
    for dx in range(1, factor):
        sums += blocks[:, :, dx]
    levels = np.arange(255 * factor * factor + 1, dtype=np.float64) / (factor * factor)
    od = -np.log10((levels + 1.0) / 256.0)
    unmix = np.linalg.inv(stain_matrix(hematoxylin_vector, eosin_vector))[:, 0]
    tables = (unmix[:, None] * od[None, :]).astype(np.float32)
    out: FloatImage = np.take(tables[0], sums[..., 0])
    out += np.take(tables[1], sums[..., 1])
    out += np.take(tables[2], sums[..., 2])
    return out
