"""primaa: image-analysis jobs for digital pathology, with algorithms as plugins.

A plugin author needs only this import::

    from primaa import Algorithm, AlgorithmResult, hookimpl
"""

from primaa.plugins import (
    DOWNSAMPLE,
    PIXEL_SIZE_UM,
    Algorithm,
    AlgorithmResult,
    AsyncAlgorithm,
    JobCancelled,
    Progress,
    RGBImage,
    TileMeasurements,
    hookimpl,
    multipoint,
)

__version__ = "0.1.0"

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
    "__version__",
    "hookimpl",
    "multipoint",
]
