"""Precision, recall and F1 of ``poi_detection`` and of the scikit-image reference.

Default parameters, one-to-one matching within 6, 8 and 12 px, micro-averaged over
the images of each dev set (brain: ``nuclei-dev``; multi-organ: ``nuclei-multiorgan-dev``,
organs from its README table) and over each organ. Run from the repository root::

    python bench/nuclei_accuracy.py [--data DIR ...] [--with-net]

``--with-net`` adds the learned ``poi_detection_net`` (plugins_contrib/primaa-nuclei-net,
when installed). It was trained on these very tiles, so its rows here are training-set
figures; its cross-validated ones are in that plugin's README.
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
from primaa.plugins.builtin.nuclei import PoiDetection

SHARED = Path(__file__).resolve().parents[1].parent / "shared/data"
DEFAULT_DATA = SHARED / "nuclei-dev"
DEV_SETS = (DEFAULT_DATA, SHARED / "nuclei-multiorgan-dev")
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
    algorithm = PoiDetection()
    result = algorithm.run(image, algorithm.Parameters().load({}), lambda fraction: None)
    assert result.geometry is not None
    return np.asarray(result.geometry["coordinates"], dtype=np.float64).reshape(-1, 2)


def organs(data: Path) -> dict[str, str]:
    """Organ of each image, from README table rows ``| <stem> | <organ> (...) | ...``."""
    readme = data / "README.md"
    found: dict[str, str] = {}
    if readme.exists():
        for line in readme.read_text(encoding="utf-8").splitlines():
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if len(cells) >= 2 and (data / f"{cells[0]}.png").exists() and cells[1]:
                found[cells[0]] = cells[1].split()[0]
    return found


def evaluate(
    detector: Detector,
    dataset: list[tuple[str, npt.NDArray[np.uint8], npt.NDArray[np.float64]]],
    groups: dict[str, str] | None = None,
) -> tuple[dict[str, dict[float, MatchCounts]], float]:
    """Counts per group (``"all"`` and each organ in ``groups``) and radius, and seconds."""
    start = time.perf_counter()
    predictions = [detector(image) for _, image, _ in dataset]
    elapsed = time.perf_counter() - start
    per_group: dict[str, dict[float, list[MatchCounts]]] = {}
    for predicted, (name, _, truth) in zip(predictions, dataset, strict=True):
        names = ["all"] + ([groups[name]] if groups and name in groups else [])
        for group in names:
            for radius in RADII:
                counts = score_points(predicted, truth, radius)
                per_group.setdefault(group, {r: [] for r in RADII})[radius].append(counts)
    return {
        group: {r: micro_average(c) for r, c in radii.items()} for group, radii in per_group.items()
    }, elapsed


def net(image: npt.NDArray[np.uint8]) -> npt.NDArray[np.float64]:
    """The contrib learned detector, default parameters (imported only when asked for)."""
    from primaa_nuclei_net.algorithm import PoiDetectionNet

    algorithm = PoiDetectionNet()
    result = algorithm.run(image, algorithm.Parameters().load({}), lambda fraction: None)
    assert result.geometry is not None
    return np.asarray(result.geometry["coordinates"], dtype=np.float64).reshape(-1, 2)


def report(data: Path, with_net: bool = False) -> None:
    """Print the overall and per-organ table of one dev set."""
    dataset = load_dataset(data)
    if not dataset:
        print(f"no PNG + CSV pairs in {data}: skipped")
        return
    groups = organs(data)
    n_true = sum(len(truth) for _, _, truth in dataset)
    print(f"\n{data.name}: {len(dataset)} images, {n_true} true nuclei ({data})")
    header = f"{'detector':<20}{'group':<10}{'n':>5}{'radius':>7}{'P':>7}{'R':>7}{'F1':>7}"
    print(header + f"{'TP':>7}{'FP':>7}{'FN':>7}")
    sizes: dict[str, int] = {"all": len(dataset)}
    for name, _, _ in dataset:
        if name in groups:
            sizes[groups[name]] = sizes.get(groups[name], 0) + 1
    detectors: list[tuple[str, Detector]] = [
        ("poi_detection", ours),
        ("skimage reference", reference_detect),
    ]
    if with_net:
        detectors.append(("poi_detection_net", net))
    for label, detector in detectors:
        scores, elapsed = evaluate(detector, dataset, groups)
        for group, by_radius in scores.items():
            for radius, c in by_radius.items():
                print(
                    f"{label:<20}{group:<10}{sizes[group]:>5}{radius:>7g}{c.precision:>7.3f}"
                    f"{c.recall:>7.3f}{c.f1:>7.3f}{c.tp:>7}{c.fp:>7}{c.fn:>7}"
                )
        print(f"{label:<20}{elapsed:.2f} s for {len(dataset)} images")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        type=Path,
        action="append",
        help="folder of PNG + CSV (repeatable); default: both dev sets",
    )
    parser.add_argument(
        "--with-net",
        action="store_true",
        help="also the contrib learned detector poi_detection_net (trained on these sets)",
    )
    args = parser.parse_args()
    for data in args.data or DEV_SETS:
        report(data, args.with_net)


if __name__ == "__main__":
    main()
