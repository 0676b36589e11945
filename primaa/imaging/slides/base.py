"""The slide reader interface: levels, resolution, and reads at any resolution.

Every read is expressed in level-0 coordinates for its position and in a
resolution for its pixels (a pyramid level, micrometres per pixel, or a
downsample factor), after TIAToolbox's resolution-first readers. Backends only
read whole pixels of one of their levels; choosing the level and resampling
live here, once, in bounded blocks, so a read never holds more than its output
and one block of the level it samples.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from pathlib import Path
from types import TracebackType
from typing import Final, Self

import cv2
import numpy as np
import numpy.typing as npt
from scipy import sparse

__all__ = ["RGB", "Level", "Slide", "SlideError", "composite_on_white"]

#: An RGB image, ``uint8``, shape ``(height, width, 3)``, origin top-left.
RGB = npt.NDArray[np.uint8]

#: The largest read, in output pixels (192 MB of RGB): tiles are far smaller.
MAX_READ_PIXELS: Final = 1 << 26

#: A resampled read samples its level in blocks of at most this side (pixels of the level):
#: 4 MB of RGBA from OpenSlide, 25 MB of float64 while averaging.
_BLOCK_SIDE: Final = 1024

#: Downsample factors closer than this (relative) are the same resolution.
_SAME: Final = 1e-6


class SlideError(Exception):
    """The slide cannot be opened or read; the message is safe to show to clients."""


@dataclasses.dataclass(frozen=True, slots=True)
class Level:
    """One level of a slide's pyramid: its size and its downsample from level 0."""

    width: int
    height: int
    downsample: float


def composite_on_white(rgba: npt.NDArray[np.uint8]) -> RGB:
    """Flatten non-premultiplied RGBA over white (OpenSlide's "no data" is transparent)."""
    alpha = rgba[..., 3:4]
    if alpha.size == 0 or int(alpha.min()) == 255:
        return np.ascontiguousarray(rgba[..., :3])
    a = alpha.astype(np.uint16)
    blended = (rgba[..., :3].astype(np.uint16) * a + 255 * (255 - a) + 127) // 255
    result: RGB = blended.astype(np.uint8)
    return result


class Slide(abc.ABC):
    """A slide opened for reading; close it (or use ``with``) to free its file.

    ``mpp`` is micrometres per level-0 pixel (the mean of x and y), or None when
    the file does not say. ``format`` names the reader ("aperio",
    "generic-tiff", ... from OpenSlide; "png", "jpeg", "tiff" for flat images).
    """

    def __init__(self, *, path: Path, format: str, levels: tuple[Level, ...], mpp: float | None):
        if not levels:
            raise SlideError("the slide has no image levels")
        self.path = path
        self.format = format
        self.levels = levels
        self.mpp = mpp

    @property
    def dimensions(self) -> tuple[int, int]:
        """(width, height) of level 0, in pixels."""
        return self.levels[0].width, self.levels[0].height

    @abc.abstractmethod
    def close(self) -> None:
        """Release the file; the slide cannot be read afterwards."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        width, height = self.dimensions
        return (
            f"<{type(self).__name__} {self.path.name} {self.format} {width}x{height} "
            f"levels={len(self.levels)} mpp={self.mpp}>"
        )

    def resolve_downsample(
        self, *, mpp: float | None = None, downsample: float | None = None
    ) -> float:
        """Level-0 pixels per output pixel for a resolution in µm/px, else a pixel scale.

        The scale is the fallback for slides that do not state their resolution;
        asking only for µm/px of such a slide is an error (there is no honest guess).
        """
        if mpp is not None and self.mpp is not None:
            return _positive(mpp / self.mpp, "resolution")
        if downsample is not None:
            return _positive(downsample, "downsample")
        if mpp is not None:
            raise SlideError(
                "the slide does not state its resolution (micrometres per pixel), "
                "so it cannot be read at a resolution given in micrometres per pixel"
            )
        return 1.0

    def best_level(self, downsample: float) -> int:
        """The coarsest level at least as fine as ``downsample``: read it, then shrink."""
        best = 0
        for index, level in enumerate(self.levels):
            if level.downsample <= downsample * (1 + _SAME) and (
                level.downsample > self.levels[best].downsample
            ):
                best = index
        return best

    def nearest_level(self, downsample: float) -> int:
        """The level whose downsample is closest to ``downsample`` (by ratio)."""
        return min(
            range(len(self.levels)),
            key=lambda index: abs(math.log(self.levels[index].downsample / downsample)),
        )

    def read_region(
        self,
        x: float,
        y: float,
        width: int,
        height: int,
        *,
        level: int | None = None,
        mpp: float | None = None,
        downsample: float | None = None,
    ) -> RGB:
        """Read ``width`` x ``height`` output pixels whose top-left is (x, y) in level 0.

        Give at most one of ``level``, ``mpp`` or ``downsample`` (level-0 pixels
        per output pixel); none means level 0. Output pixel (i, j) covers level 0
        from ``x + j * d`` to ``x + (j + 1) * d`` (``d`` the downsample): at a
        level's own resolution the read starts at the nearest pixel of that level;
        at any other, each output pixel is the exact area average of the finer level
        sampled (interpolated when finer than level 0). Outside the slide is white.
        """
        if sum(v is not None for v in (level, mpp, downsample)) > 1:
            raise ValueError("give at most one of level, mpp or downsample")
        if width <= 0 or height <= 0:
            raise ValueError(f"region size must be positive, got {width}x{height}")
        if width * height > MAX_READ_PIXELS:
            raise SlideError(
                f"a read of {width}x{height} pixels is above the limit of "
                f"{MAX_READ_PIXELS / 1e6:.0f} MP; read tiles"
            )
        if not (math.isfinite(x) and math.isfinite(y)):
            raise ValueError("region position must be finite")
        if level is not None:
            if not 0 <= level < len(self.levels):
                raise ValueError(f"level {level} out of range 0..{len(self.levels) - 1}")
            factor = self.levels[level].downsample
            chosen = level
        else:
            factor = self.resolve_downsample(mpp=mpp, downsample=downsample)
            chosen = self.best_level(factor)
        return self._read_resampled(x, y, width, height, factor, chosen)

    def _read_resampled(
        self, x: float, y: float, width: int, height: int, factor: float, index: int
    ) -> RGB:
        step = factor / self.levels[index].downsample
        if abs(step - 1.0) < _SAME:
            level_x = round(x / self.levels[index].downsample)
            level_y = round(y / self.levels[index].downsample)
            return self._read_level(index, level_x, level_y, width, height)
        out = np.empty((height, width, 3), np.uint8)
        block = max(1, int(_BLOCK_SIDE / max(step, 1.0)))
        for top in range(0, height, block):
            bottom = min(height, top + block)
            for left in range(0, width, block):
                right = min(width, left + block)
                out[top:bottom, left:right] = self._read_block(
                    x, y, (left, top, right, bottom), factor, index
                )
        return out

    def _read_block(
        self,
        x: float,
        y: float,
        box: tuple[int, int, int, int],
        factor: float,
        index: int,
    ) -> RGB:
        """One output block from the level pixels it covers: their exact area average."""
        left, top, right, bottom = box
        scale = self.levels[index].downsample
        start_x, start_y = (x + left * factor) / scale, (y + top * factor) / scale
        x0, y0 = math.floor(start_x), math.floor(start_y)
        x1 = max(x0 + 1, math.ceil((x + right * factor) / scale))
        y1 = max(y0 + 1, math.ceil((y + bottom * factor) / scale))
        source = self._read_level(index, x0, y0, x1 - x0, y1 - y0)
        step = factor / scale
        size = (right - left, bottom - top)
        if step < 1.0:
            # Finer than level 0: interpolate (an area average would repeat pixels).
            grow = 1.0 / step
            matrix = np.array(
                [[grow, 0.0, grow * (x0 - start_x)], [0.0, grow, grow * (y0 - start_y)]]
            )
            matrix[:, 2] += (grow - 1.0) / 2.0
            warped = cv2.warpAffine(
                source, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
            )
            result: RGB = np.asarray(warped, np.uint8)
            return result
        rows = _area_weights(start_y - y0, step, size[1], source.shape[0])
        cols = _area_weights(start_x - x0, step, size[0], source.shape[1])
        return _area_average(source, rows, cols)

    @abc.abstractmethod
    def _read_level(self, index: int, x: int, y: int, width: int, height: int) -> RGB:
        """Pixels of level ``index`` at (x, y) in that level's own coordinates; white outside."""


def _area_weights(offset: float, step: float, count: int, length: int) -> sparse.csr_matrix:
    """Weights of an area average along one axis: output pixel j covers the source from
    ``offset + j * step`` to ``offset + (j + 1) * step``, partly covered pixels by their share.
    """
    starts = np.clip(offset + step * np.arange(count, dtype=np.float64), 0.0, float(length))
    ends = np.clip(starts + step, 0.0, float(length))
    first = np.floor(starts).astype(np.intp)
    widths = np.maximum(ends - starts, 1e-12)
    rows, cols, values = [], [], []
    for k in range(math.ceil(step) + 1):
        index = first + k
        overlap = np.minimum(ends, index + 1) - np.maximum(starts, index)
        valid = (overlap > 0) & (index < length)
        rows.append(np.flatnonzero(valid))
        cols.append(index[valid])
        values.append(overlap[valid] / widths[valid])
    return sparse.csr_matrix(
        (np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))),
        shape=(count, length),
    )


def _area_average(source: RGB, rows: sparse.csr_matrix, cols: sparse.csr_matrix) -> RGB:
    """Rows, then columns: two sparse products, a few source pixels per output pixel."""
    height, width = source.shape[:2]
    out_height, out_width = rows.shape[0], cols.shape[0]
    tall = rows @ source.reshape(height, width * 3).astype(np.float64)
    turned = tall.reshape(out_height, width, 3).transpose(1, 0, 2).reshape(width, -1)
    wide = (cols @ turned).reshape(out_width, out_height, 3).transpose(1, 0, 2)
    result: RGB = np.clip(np.rint(wide), 0, 255).astype(np.uint8)
    return result


def _positive(value: float, what: str) -> float:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{what} must be a positive number, got {value!r}")
    return float(value)
