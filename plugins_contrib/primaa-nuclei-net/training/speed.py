"""Milliseconds per 512x512 tile: ``poi_detection_net`` against ``poi_detection``.

The brain dev tiles, default parameters, each detector in turn on the same tile
(alternating, so a busy neighbour slows both alike), three rounds; median per tile.
Both run on one thread (ONNX Runtime is set to one). From the repository root::

    taskset -c 1 python plugins_contrib/primaa-nuclei-net/training/speed.py
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
from data import load_tiles
from nuclei_accuracy import DEFAULT_DATA, ours
from primaa_nuclei_net.algorithm import PoiDetectionNet

ROUNDS = 3


def net(image: npt.NDArray[np.uint8]) -> object:
    algorithm = PoiDetectionNet()
    return algorithm.run(image, algorithm.Parameters().load({}), lambda fraction: None)


def main() -> None:
    tiles = [t.image for t in load_tiles([DEFAULT_DATA])]
    detectors: dict[str, Callable[[npt.NDArray[np.uint8]], object]] = {
        "poi_detection_net": net,
        "poi_detection": ours,
    }
    for detect in detectors.values():
        detect(tiles[0])  # warm-up: imports, the ONNX session
    times: dict[str, list[float]] = {name: [] for name in detectors}
    for _ in range(ROUNDS):
        for image in tiles:
            for name, detect in detectors.items():
                start = time.perf_counter()
                detect(image)
                times[name].append(time.perf_counter() - start)
    for name, seconds in times.items():
        print(f"{name:<20} {1000 * statistics.median(seconds):6.1f} ms per 512x512 tile (median)")
    ratio = statistics.median(times["poi_detection_net"]) / statistics.median(
        times["poi_detection"]
    )
    print(f"net / classical: {ratio:.2f}x the time")


if __name__ == "__main__":
    main()
