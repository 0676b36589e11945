"""Plugin door: hook markers, the algorithm contract and the registry."""

from primaa.plugins.algorithm import (
    Algorithm,
    AlgorithmResult,
    AsyncAlgorithm,
    JobCancelled,
    Progress,
    RGBImage,
)
from primaa.plugins.hookspecs import hookimpl

__all__ = [
    "Algorithm",
    "AlgorithmResult",
    "AsyncAlgorithm",
    "JobCancelled",
    "Progress",
    "RGBImage",
    "hookimpl",
]
