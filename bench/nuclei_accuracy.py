"""Precision, recall and F1 of ``poi_detection`` and of the scikit-image reference.

Micro-averaged over every image of the nuclei dev set, default parameters, at
matching radii of 6, 8 and 12 px. Run from the repository root::

    python bench/nuclei_accuracy.py [--data DIR]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from reference_skimage import reference_detect

from primaa.evaluation import MatchCounts, micro_average, score_points
from primaa.plugins.builtin.nuclei import NucleiDetection

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared/data/nuclei-dev"
RADII = (6.0, 8.0, 12.0)

Detector = Callable[[npt.NDArray[np.uint8]], npt.NDArray[np.float64]]


def load_dataset(
    data: Path,
) -> list[tuple[str, npt.NDArray[np.uint8], npt.NDArray[np.float64]]]:
    """``(name, RGB image, true [x, y] centres)`` for each PNG with a CSV beside it."""
    items = []
    for png in sorted(data.glob("*.png")):
        csv = png.with_suffix(".csv")
        if not csv.exists():
            continue
        image = np.asarray(Image.open(png).convert("RGB"))
        truth = np.loadtxt(csv, delimiter=",", skiprows=1, ndmin=2)
        items.append((png.stem, image, truth))
    return items


def ours(image: npt.NDArray[np.uint8]) -> npt.NDArray[np.float64]:
    algorithm = NucleiDetection()
    result = algorithm.run(image, algorithm.Parameters().load({}), lambda fraction: None)
    assert result.geometry is not None
    return np.asarray(result.geometry["coordinates"], dtype=np.float64).reshape(-1, 2)


def evaluate(
    detector: Detector,
    dataset: list[tuple[str, npt.NDArray[np.uint8], npt.NDArray[np.float64]]],
) -> tuple[dict[float, MatchCounts], float]:
    per_radius: dict[float, list[MatchCounts]] = {r: [] for r in RADII}
    start = time.perf_counter()
    predictions = [detector(image) for _, image, _ in dataset]
    elapsed = time.perf_counter() - start
    for predicted, (_, _, truth) in zip(predictions, dataset, strict=True):
        for radius in RADII:
            per_radius[radius].append(score_points(predicted, truth, radius))
    return {r: micro_average(c) for r, c in per_radius.items()}, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of PNG + CSV")
    args = parser.parse_args()
    dataset = load_dataset(args.data)
    if not dataset:
        raise SystemExit(f"no PNG + CSV pairs in {args.data}")
    n_true = sum(len(truth) for _, _, truth in dataset)
    print(f"{len(dataset)} images, {n_true} true nuclei, data: {args.data}")
    print(f"{'detector':<22}{'radius':>7}{'P':>8}{'R':>8}{'F1':>8}{'TP':>7}{'FP':>7}{'FN':>7}")
    for label, detector in (("poi_detection", ours), ("skimage reference", reference_detect)):
        scores, elapsed = evaluate(detector, dataset)
        for radius, c in scores.items():
            print(
                f"{label:<22}{radius:>7g}{c.precision:>8.3f}{c.recall:>8.3f}{c.f1:>8.3f}"
                f"{c.tp:>7}{c.fp:>7}{c.fn:>7}"
            )
        print(f"{label:<22} {elapsed:.2f} s for {len(dataset)} images")


if __name__ == "__main__":
    main()
