"""The installed distribution is found by primaa through its entry point."""

from __future__ import annotations

import importlib.metadata

from primaa.plugins.registry import load_registry


def test_entry_point_is_declared_by_the_installed_distribution() -> None:
    entry_points = importlib.metadata.distribution("primaa-qc").entry_points
    assert [(ep.group, ep.name, ep.value) for ep in entry_points] == [
        ("primaa", "qc", "primaa_qc.plugin")
    ]


def test_registry_lists_image_qc_from_plugin_qc() -> None:
    registry = load_registry()
    assert "image_qc" in registry
    assert registry.algorithms["image_qc"].plugin == "qc"
    assert not [b for b in registry.broken if b.name == "qc"]
