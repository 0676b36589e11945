"""The module the ``primaa`` entry point names: primaa calls its hook once per process."""

from __future__ import annotations

from primaa import Algorithm, hookimpl
from primaa_qc.algorithm import ImageQC


@hookimpl
def primaa_algorithms() -> list[Algorithm]:
    return [ImageQC()]
