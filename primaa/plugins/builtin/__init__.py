"""The built-in algorithms, registered through the same ``primaa`` entry point as any plugin."""

from __future__ import annotations

from primaa.plugins.algorithm import AnyAlgorithm
from primaa.plugins.builtin.nuclei import PoiDetection
from primaa.plugins.builtin.tissue import RoiDetection
from primaa.plugins.hookspecs import hookimpl


@hookimpl
def primaa_algorithms() -> list[AnyAlgorithm]:
    return [PoiDetection(), RoiDetection()]
