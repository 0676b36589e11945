"""The module the ``primaa`` entry point names: primaa calls its hook once per process."""

from __future__ import annotations

from primaa import Algorithm, hookimpl
from primaa_nuclei_net.algorithm import PoiDetectionNet


@hookimpl
def primaa_algorithms() -> list[Algorithm]:
    return [PoiDetectionNet()]
