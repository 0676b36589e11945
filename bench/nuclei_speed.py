"""Per-core throughput of ``poi_detection`` against the scikit-image reference.

Both run in this process, pinned to one core with single-threaded BLAS/OpenMP,
alternating repetitions so that drifts in clock speed hit both alike. Times the
whole call, colour conversion included; ours goes through ``PoiDetection.run``
(tiling, progress and GeoJSON output included). Run from the repository root::

    python bench/nuclei_speed.py [--data DIR] [--core N] [--repeats N]
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import numpy.typing as npt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from nuclei_accuracy import DEFAULT_DATA, load_dataset  # noqa: E402
from reference_skimage import reference_detect  # noqa: E402

from primaa.plugins.builtin.nuclei import PoiDetection  # noqa: E402

Image = npt.NDArray[np.uint8]


def mosaic(images: Sequence[Image], size: int) -> Image:
    """A ``size`` x ``size`` image tiled from ``images`` in turn (real tissue, not noise)."""
    tile_h, tile_w = images[0].shape[:2]
    out = np.empty((size, size, 3), dtype=np.uint8)
    k = 0
    for y in range(0, size, tile_h):
        for x in range(0, size, tile_w):
            tile = images[k % len(images)]
            k += 1
            out[y : y + tile_h, x : x + tile_w] = tile[: size - y, : size - x]
    return out


def ours() -> Callable[[Image], Any]:
    algorithm = PoiDetection()
    parameters = algorithm.Parameters().load({})
    return lambda image: algorithm.run(image, parameters, lambda fraction: None)


def time_alternating(
    detectors: dict[str, Callable[[Image], Any]], images: Sequence[Image], repeats: int
) -> dict[str, float]:
    """Best-of-``repeats`` seconds to process all ``images``, per detector."""
    best = dict.fromkeys(detectors, float("inf"))
    for detector in detectors.values():  # warm-up: imports, caches
        detector(images[0])
    for _ in range(repeats):
        for name, detector in detectors.items():
            start = time.perf_counter()
            for image in images:
                detector(image)
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of PNG + CSV")
    parser.add_argument("--core", type=int, default=0, help="CPU core to pin to")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--large", type=int, default=4096, help="side of the mosaic image")
    args = parser.parse_args()
    os.sched_setaffinity(0, {args.core})
    images = [image for _, image, _ in load_dataset(args.data)]
    if not images:
        raise SystemExit(f"no PNG + CSV pairs in {args.data}")
    detectors = {"poi_detection": ours(), "skimage reference": reference_detect}
    cases = [
        (f"{images[0].shape[1]}x{images[0].shape[0]} x{len(images)}", images, args.repeats),
        (f"{args.large}x{args.large}", [mosaic(images, args.large)], max(2, args.repeats // 2)),
    ]
    print(f"pinned to core {args.core}; best of N alternating repetitions")
    print(f"{'images':<18}{'ours MP/s':>11}{'skimage MP/s':>14}{'ratio':>8}")
    for label, batch, repeats in cases:
        megapixels = sum(image.shape[0] * image.shape[1] for image in batch) / 1e6
        seconds = time_alternating(detectors, batch, repeats)
        ours_rate = megapixels / seconds["poi_detection"]
        ref_rate = megapixels / seconds["skimage reference"]
        print(f"{label:<18}{ours_rate:>11.1f}{ref_rate:>14.1f}{ours_rate / ref_rate:>8.2f}")


if __name__ == "__main__":
    main()
