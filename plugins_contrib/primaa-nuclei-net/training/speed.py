"""Milliseconds per 512x512 tile: ``poi_detection_net``, ``poi_detection`` and the reference.

The brain dev tiles, default parameters, the three detectors in turn on the same tile
(alternating, so a busy neighbour slows all alike), three rounds; median per tile. All run
on one thread (BLAS/OpenMP and ONNX Runtime set to one; pin the process with ``taskset``).
The reference is ``bench/reference_skimage.py``, the yardstick of issue 14 ("per core, at
least 4x the scikit-image reference"). Then the network's call split into its stages
(resampling to 0.5 µm/px, network, peaks). From the repository root::

    taskset -c 1 python plugins_contrib/primaa-nuclei-net/training/speed.py
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"

import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402
import numpy.typing as npt  # noqa: E402
from data import load_tiles  # noqa: E402
from nuclei_accuracy import DEFAULT_DATA, ours  # noqa: E402
from primaa_nuclei_net import detector, peaks, scale  # noqa: E402
from primaa_nuclei_net.algorithm import DEFAULT_THRESHOLD, PoiDetectionNet  # noqa: E402
from reference_skimage import reference_detect  # noqa: E402

ROUNDS = 3
Image = npt.NDArray[np.uint8]


def net(image: Image) -> object:
    algorithm = PoiDetectionNet()
    return algorithm.run(image, algorithm.Parameters().load({}), lambda fraction: None)


def median_ms(seconds: list[float]) -> float:
    return 1000 * statistics.median(seconds)


def stages(tiles: list[Image]) -> dict[str, list[float]]:
    """Seconds per tile of each stage of ``detector.detect`` at the default 0.25 µm/px."""
    times: dict[str, list[float]] = {"resampling": [], "network": [], "peaks": []}
    for _ in range(ROUNDS):
        for image in tiles:
            start = time.perf_counter()
            small, _, _ = scale.to_network(image, scale.DEFAULT_IMAGE_MPP)
            resampled = time.perf_counter()
            heat = detector.heat_map(small)
            networked = time.perf_counter()
            peaks.find_peaks(heat, DEFAULT_THRESHOLD)
            times["resampling"].append(resampled - start)
            times["network"].append(networked - resampled)
            times["peaks"].append(time.perf_counter() - networked)
    return times


def main() -> None:
    tiles = [t.image for t in load_tiles([DEFAULT_DATA])]
    detectors: dict[str, Callable[[Image], object]] = {
        "poi_detection_net": net,
        "poi_detection": ours,
        "skimage reference": reference_detect,
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
    reference = median_ms(times["skimage reference"])
    side = tiles[0].shape[0]
    print(f"{len(tiles)} tiles {side}x{side}, {ROUNDS} rounds, median ms per tile, one thread")
    for name, seconds in times.items():
        ms = median_ms(seconds)
        rate = side * side / 1e6 / (ms / 1000)
        print(f"{name:<20} {ms:6.1f} ms  {rate:5.1f} MP/s  {reference / ms:5.2f}x the reference")
    print("poi_detection_net by stage (median ms per tile):")
    for name, seconds in stages(tiles).items():
        print(f"  {name:<12} {median_ms(seconds):6.2f}")


if __name__ == "__main__":
    main()
