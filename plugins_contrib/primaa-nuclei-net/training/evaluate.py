"""Cross-validated accuracy of the network, beside the classical ``poi_detection``.

Reads the held-out heat maps ``train.py fold K`` saved, finds centres as the plugin does,
and prints precision, recall and F1 at 6, 8 and 12 px per dev set and per organ, and
F1 at 8 px over a range of thresholds (to choose the plugin's default)::

    python plugins_contrib/primaa-nuclei-net/training/evaluate.py [--out DIR] [--threshold 0.5]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import numpy.typing as npt
from data import Tile, load_tiles
from nuclei_accuracy import RADII, ours
from primaa_nuclei_net.algorithm import DEFAULT_THRESHOLD
from primaa_nuclei_net.peaks import find_peaks
from primaa_nuclei_net.scale import to_image

from primaa.evaluation import MatchCounts, micro_average, score_points

Points = npt.NDArray[np.float64]
THRESHOLDS = [round(0.2 + 0.05 * i, 2) for i in range(11)]


def centres(tile: Tile, heat: npt.NDArray[np.float32], threshold: float) -> Points:
    row_scale = heat.shape[0] / tile.image.shape[0]
    column_scale = heat.shape[1] / tile.image.shape[1]
    return to_image(find_peaks(heat, threshold), row_scale, column_scale)


def table(label: str, tiles: list[Tile], predicted: dict[str, Points]) -> None:
    groups: dict[tuple[str, str], list[Tile]] = {}
    for tile in tiles:
        groups.setdefault((tile.dev_set, "all"), []).append(tile)
        if tile.organ != "brain":
            groups.setdefault((tile.dev_set, tile.organ), []).append(tile)
    for (dev_set, organ), members in groups.items():
        row = [f"{label:<18}{dev_set:<24}{organ:<9}{len(members):>3}"]
        for radius in RADII:
            c = micro_average(score_points(predicted[t.name], t.points, radius) for t in members)
            row.append(f"  {c.precision:.3f} {c.recall:.3f} {c.f1:.3f}")
        print("".join(row))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    parser.add_argument("--out", type=Path, default=Path("/tmp/primaa-nuclei-net"))
    args = parser.parse_args()
    from train import DEV_SETS

    tiles = load_tiles(DEV_SETS)
    heat: dict[str, npt.NDArray[np.float32]] = {}
    for saved in sorted(args.out.glob("fold*.npz")):
        with np.load(saved) as maps:
            heat.update({name: maps[name] for name in maps.files})
    tiles = [t for t in tiles if t.name in heat]
    print(f"{len(tiles)} held-out tiles from {sorted(p.name for p in args.out.glob('fold*.npz'))}")
    print("F1 at 8 px by threshold (brain / multi-organ):")
    for threshold in THRESHOLDS:
        scores = []
        for dev_set in sorted({t.dev_set for t in tiles}):
            counts: list[MatchCounts] = [
                score_points(centres(t, heat[t.name], threshold), t.points, 8.0)
                for t in tiles
                if t.dev_set == dev_set
            ]
            scores.append(f"{micro_average(counts).f1:.3f}")
        print(f"  {threshold:.2f}  " + " / ".join(scores))
    radii = ", ".join(f"{r:g}" for r in RADII)
    print(f"\nP R F1 at {radii} px; network at threshold {args.threshold}")
    table(
        "poi_detection_net",
        tiles,
        {t.name: centres(t, heat[t.name], args.threshold) for t in tiles},
    )
    table("poi_detection", tiles, {t.name: ours(t.image) for t in tiles})


if __name__ == "__main__":
    main()
