"""The installed distribution is found by primaa through its entry point, with its weights."""

from __future__ import annotations

import importlib.metadata
from importlib import resources

from primaa.plugins.registry import load_registry


def test_entry_point_is_declared_by_the_installed_distribution() -> None:
    entry_points = importlib.metadata.distribution("primaa-nuclei-net").entry_points
    assert [(ep.group, ep.name, ep.value) for ep in entry_points] == [
        ("primaa", "nuclei_net", "primaa_nuclei_net.plugin")
    ]


def test_registry_lists_poi_detection_net_with_its_slide_resolution() -> None:
    registry = load_registry()
    assert "poi_detection_net" in registry
    algorithm = registry.algorithms["poi_detection_net"]
    assert algorithm.plugin == "nuclei_net"
    assert not [b for b in registry.broken if b.name == "nuclei_net"]
    assert (algorithm.algorithm.mpp, algorithm.algorithm.border_um) == (0.5, 32.0)


def test_weights_ship_inside_the_package_and_stay_small() -> None:
    weights = resources.files("primaa_nuclei_net").joinpath("nuclei_net.onnx")
    size = len(weights.read_bytes())
    assert 100_000 < size < 3_000_000
