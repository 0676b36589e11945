"""Plugin door: hook markers, the algorithm contract and the registry."""

from primaa.plugins.algorithm import (
    DOWNSAMPLE,
    PIXEL_SIZE_UM,
    Algorithm,
    AlgorithmResult,
    AsyncAlgorithm,
    JobCancelled,
    Progress,
    RGBImage,
    TileMeasurements,
    multipoint,
)
from primaa.plugins.hookspecs import hookimpl

__all__ = [
    "DOWNSAMPLE",
    "PIXEL_SIZE_UM",
    "Algorithm",
    "AlgorithmResult",
    "AsyncAlgorithm",
    "JobCancelled",
    "Progress",
    "RGBImage",
    "TileMeasurements",
    "hookimpl",
    "multipoint",
]
