"""Megapixels per second per core of each built-in algorithm, against its reference.

``poi_detection`` against the scikit-image reference (``bench/nuclei_speed.py``'s
timing, pinned to one core, single-threaded BLAS); ``roi_detection`` alone:
there is no tissue-detection reference to compare with.

    python -m bench.algorithms [--quick]
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"

import argparse  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from nuclei_accuracy import load_dataset  # noqa: E402
from nuclei_speed import Image, mosaic, ours, time_alternating  # noqa: E402
from reference_skimage import reference_detect  # noqa: E402

from bench.harness import print_table  # noqa: E402
from bench.loopback import NUCLEI_DIRS  # noqa: E402
from primaa.plugins.builtin.tissue import RoiDetection  # noqa: E402


def tissue() -> Callable[[Image], Any]:
    algorithm = RoiDetection()
    parameters = algorithm.Parameters().load({})
    return lambda image: algorithm.run(image, parameters, lambda fraction: None)


def run(quick: bool = False, core: int = 0) -> None:
    os.sched_setaffinity(0, {core})
    folder = next(d for d in NUCLEI_DIRS if any(d.glob("*.png")))
    images = [image for _, image, _ in load_dataset(folder)][: 8 if quick else None]
    repeats = 1 if quick else 3
    large = 2048 if quick else 4096
    cases = [
        (f"{images[0].shape[1]}x{images[0].shape[0]} x{len(images)}", images, repeats),
        (f"{large}x{large}", [mosaic(images, large)], max(1, repeats - 1)),
    ]
    rows: list[list[object]] = []
    for label, batch, reps in cases:
        megapixels = sum(image.shape[0] * image.shape[1] for image in batch) / 1e6
        seconds = time_alternating(
            {"poi": ours(), "skimage": reference_detect, "roi": tissue()}, batch, reps
        )
        poi, ref, roi = (megapixels / seconds[k] for k in ("poi", "skimage", "roi"))
        rows.append(["poi_detection", label, poi, ref, f"{poi / ref:.2f}"])
        rows.append(["roi_detection", label, roi, "(none)", "-"])
    print_table(
        f"Algorithms, MP/s on one core (core {core}), best of {repeats} alternating;"
        f" data: {folder}",
        ["algorithm", "images", "ours MP/s", "reference MP/s", "ours/ref"],
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--core", type=int, default=0)
    args = parser.parse_args()
    run(args.quick, args.core)


if __name__ == "__main__":
    main()
