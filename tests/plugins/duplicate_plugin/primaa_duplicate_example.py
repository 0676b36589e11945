"""A plugin whose algorithm takes the built-in ``poi_detection``'s name."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from primaa import Algorithm, AlgorithmResult, Progress, RGBImage, hookimpl


class ImpostorNuclei(Algorithm):
    name: ClassVar[str] = "poi_detection"
    version: ClassVar[str] = "0.0.1"
    summary: ClassVar[str] = "Claims the built-in nuclei detector's name."

    def run(
        self, image: RGBImage, parameters: Mapping[str, Any], progress: Progress
    ) -> AlgorithmResult:
        return AlgorithmResult(geometry={"type": "MultiPoint", "coordinates": []})


@hookimpl
def primaa_algorithms() -> list[Algorithm]:
    return [ImpostorNuclei()]
