"""Running the ONNX network over an image of any size, and reading nucleus centres from it.

The network sees overlapping windows (each with :data:`MARGIN` px of context kept from its
neighbours), so memory stays bounded on large images and the heat map has no seams. Its
heat map comes out at half the input's resolution (1 µm/px): the full-resolution level
would cost most of the time and is not needed to place a centre within a micron.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from importlib import resources
from typing import Any, Literal, Protocol, cast

import numpy as np
import numpy.typing as npt

from primaa_nuclei_net import peaks, scale

#: Window core and context, in network input pixels (0.5 µm/px): 256 µm cores, 32 µm of
#: context, more than the network's receptive field reaches in practice. Both even.
CORE = 512
MARGIN = 64
#: Input pixels per heat-map pixel (a stride-2 stem).
STRIDE = 2
#: The stem and three poolings: each side the network sees is padded to a multiple of this.
MULTIPLE = 16

MODEL = "nuclei_net.onnx"

#: The network's input is ``(rgb - INPUT_MEAN) / INPUT_SPREAD``, RGB in [0, 1]. Done here, in
#: the conversion to float that is needed anyway, rather than as two more passes in the
#: graph (0.22 of the network's 8.4 ms on a 512 px tile, under ONNX Runtime's profiler).
INPUT_MEAN = (0.7, 0.5, 0.7)
INPUT_SPREAD = 0.2
_MEAN = (255.0 * np.array(INPUT_MEAN, dtype=np.float32)).reshape(1, 3, 1, 1)
_SCALE = np.float32(1.0 / (255.0 * INPUT_SPREAD))


class Session(Protocol):
    """The part of ``onnxruntime.InferenceSession`` used here (onnxruntime has no type hints)."""

    def run(self, output_names: list[str], input_feed: dict[str, Any]) -> list[Any]: ...


@functools.cache
def session() -> Session:
    """One ONNX Runtime session per process, single-threaded: primaa runs one job per worker."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    model = resources.files("primaa_nuclei_net").joinpath(MODEL).read_bytes()
    return cast(
        Session,
        onnxruntime.InferenceSession(
            model, sess_options=options, providers=["CPUExecutionProvider"]
        ),
    )


def _run(window: scale.UInt8Image) -> npt.NDArray[np.float32]:
    height, width = window.shape[:2]
    extra_rows, extra_columns = -height % MULTIPLE, -width % MULTIPLE
    padded = window
    if extra_rows or extra_columns:
        # Reflection, as in training; a window too thin to reflect repeats its edge. (With
        # nothing to add, np.pad would still copy the window: 85 µs of a 512 px tile.)
        mode: Literal["reflect", "edge"] = "reflect" if min(height, width) > MULTIPLE else "edge"
        padded = np.pad(window, ((0, extra_rows), (0, extra_columns), (0, 0)), mode=mode)
    # Into a C-ordered array: left to itself, numpy keeps the transposed layout, slower to
    # fill (0.7 against 0.25 ms) and copied again by ONNX Runtime.
    batch = np.empty((1, 3, *padded.shape[:2]), dtype=np.float32)
    np.subtract(padded.transpose(2, 0, 1)[None], _MEAN, out=batch)
    batch *= _SCALE
    (heat,) = session().run(["heat"], {"image": batch})
    return np.asarray(heat, dtype=np.float32)[0, 0, : _out(height), : _out(width)]


#: A window is glass, and skipped (its heat left at 0), when fewer than
#: :data:`GLASS_MAX_DARK` of every other pixel (every other row and column) have green
#: below :data:`GLASS_LEVEL`: under a third of a nucleus (about 95 px at 0.5 µm/px, so 24
#: of those pixels). Both stains take green away; pale eosin (green about 196) and any
#: nucleus count as dark, so only glass, with a few specks at most, is skipped. Tissue
#: tiles of a slide hold glass around the tissue, which the network gains nothing from.
GLASS_LEVEL = 205
GLASS_MAX_DARK = 8


def _is_glass(window: scale.UInt8Image) -> bool:
    dark = window[::2, ::2, 1] < GLASS_LEVEL
    return int(np.count_nonzero(dark)) < GLASS_MAX_DARK


def _out(side: int) -> int:
    """Heat-map pixels along a side of ``side`` input pixels."""
    return -(-side // STRIDE)


def heat_map(
    image: scale.UInt8Image, progress: Callable[[float], None] | None = None
) -> npt.NDArray[np.float32]:
    """Nucleus-centre heat map in [0, 1], at half the resolution of ``image`` (0.5 µm/px).

    Heat-map pixel ``q`` is centred on input pixel ``STRIDE * q + 0.5``.
    """
    height, width = image.shape[:2]
    heat = np.zeros((_out(height), _out(width)), dtype=np.float32)
    corners = [(top, left) for top in range(0, height, CORE) for left in range(0, width, CORE)]
    for done, (top, left) in enumerate(corners, start=1):
        r0, c0 = max(0, top - MARGIN), max(0, left - MARGIN)
        r1, c1 = min(height, top + CORE + MARGIN), min(width, left + CORE + MARGIN)
        piece = image[r0:r1, c0:c1]
        if not _is_glass(piece):
            window = _run(piece)
            # Window corners are even, so its heat map sits on the whole image's grid.
            top_o, left_o, r0_o, c0_o = (v // STRIDE for v in (top, left, r0, c0))
            bottom_o = _out(min(height, top + CORE))
            right_o = _out(min(width, left + CORE))
            heat[top_o:bottom_o, left_o:right_o] = window[
                top_o - r0_o : bottom_o - r0_o, left_o - c0_o : right_o - c0_o
            ]
        if progress is not None:
            progress(done / len(corners))
    return heat


def detect(
    image: scale.UInt8Image,
    image_mpp: float,
    threshold: float,
    progress: Callable[[float], None] | None = None,
) -> npt.NDArray[np.float64]:
    """``[x, y]`` nucleus centres in ``image`` pixels, for an image at ``image_mpp`` µm/px."""
    small, row_scale, column_scale = scale.to_network(image, image_mpp)
    found = peaks.find_peaks(heat_map(small, progress), threshold)
    # Heat-map pixel q is centred on network pixel 2q + 0.5: a grid at half the scale.
    return scale.to_image(found, row_scale / STRIDE, column_scale / STRIDE)
