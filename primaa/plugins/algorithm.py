"""The algorithm contract every plugin implements.

An algorithm is a class with a few class attributes and a ``run`` method. It
must be importable at module level: worker processes rebuild the registry from
the entry points and find the algorithm again by its name.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal, Protocol

import marshmallow
import numpy as np
import numpy.typing as npt

#: An RGB image, ``uint8``, shape ``(height, width, 3)``, origin top-left.
RGBImage = npt.NDArray[np.uint8]

#: A GeoJSON geometry object (``{"type": ..., "coordinates": ...}``).
Geometry = dict[str, Any]

#: Added to the parameters of an algorithm that declares ``mpp`` when it runs on a slide:
#: the micrometres per pixel of the image it was given (``None`` when the slide does not
#: state its resolution), and the level-0 pixels per pixel of that image. A parameter of
#: the same name that the client gave wins.
PIXEL_SIZE_UM = "pixel_size_um"
DOWNSAMPLE = "downsample"


class JobCancelled(Exception):
    """Raised by the progress callable when the job was cancelled; let it propagate."""


class Progress(Protocol):
    """Report how far the algorithm is, as a fraction from 0.0 to 1.0.

    Call it now and then (it is cheap, and throttled for you). It raises
    :class:`JobCancelled` when the client cancelled the job: do not catch that.
    """

    def __call__(self, fraction: float, /) -> None: ...


@dataclasses.dataclass(frozen=True, slots=True)
class AlgorithmResult:
    """What ``run`` returns.

    ``geometry`` is in full-resolution pixel coordinates ``[x, y]``, origin
    top-left: a ``MultiPoint`` for detections at points, a ``MultiPolygon`` for
    regions, ``None`` when the algorithm only measures.
    """

    geometry: Geometry | None
    #: Numbers about the whole image (counts, areas, fractions).
    measurements: Mapping[str, float] = dataclasses.field(default_factory=dict)
    #: How QuPath should import each part of the geometry.
    object_type: Literal["detection", "annotation"] = "detection"
    #: QuPath classification name of the objects, e.g. ``"Nucleus"`` or ``"Tissue"``.
    classification: str | None = None
    #: Optional per-part measurements, aligned with the parts of ``geometry``.
    object_measurements: Sequence[Mapping[str, float]] | None = None


def multipoint(points: npt.NDArray[np.float64]) -> Geometry:
    """A ``MultiPoint`` of ``[x, y]`` points, to a tenth of a pixel: finer is noise for a
    detection, and the result stays small. Rounded by numpy: a Python ``round`` per
    coordinate took 0.27 ms of a 512 px tile under cProfile, 108 calls."""
    return {"type": "MultiPoint", "coordinates": np.round(points, 1).tolist()}


@dataclasses.dataclass(frozen=True, slots=True)
class TileMeasurements:
    """One tile's ``measurements``, given to :meth:`BaseAlgorithm.combine` on a slide."""

    measurements: Mapping[str, float]
    #: Level-0 pixels of the tile's core (the tile without its border): the weight of
    #: its measurements when averaging over the slide.
    area: float


class EmptyParameters(marshmallow.Schema):
    """For algorithms that take no parameters."""


class BaseAlgorithm(abc.ABC):
    """Attributes shared by CPU-bound and I/O-bound algorithms."""

    #: Unique name, used in job submissions (``algorithm_name``).
    name: ClassVar[str]
    version: ClassVar[str]
    #: One line for listings.
    summary: ClassVar[str]
    #: Longer text for ``GET /algorithms/{name}`` and the OpenAPI docs.
    description: ClassVar[str] = ""
    #: Validates and documents the parameters; ``load`` fills in defaults.
    Parameters: ClassVar[type[marshmallow.Schema]] = EmptyParameters
    #: True: runs in the worker process pool. False: ``run`` is a coroutine on the event loop.
    cpu_bound: ClassVar[bool] = True
    #: Default time limit in seconds (the server maximum still applies).
    default_timeout: ClassVar[float | None] = None
    #: Slides: the resolution ``run`` works at, in micrometres per pixel. ``None`` (the
    #: default): the algorithm gets whole images at full resolution only, and a slide
    #: larger than the flat-image pixel limit is refused with an error saying so.
    mpp: ClassVar[float | None] = None
    #: Slides: the context, in micrometres, each tile needs around the area whose objects
    #: it keeps (an object's radius plus what the filters see beyond it).
    border_um: ClassVar[float] = 0.0
    #: Slides: ``True`` cuts the slide into tiles run across every worker and merged;
    #: ``False`` reads the whole slide at ``mpp`` as one image (for objects that span
    #: tiles, such as tissue outlines; the read must stay under 64 megapixels).
    tiled: ClassVar[bool] = True

    def combine(
        self, tiles: Sequence[TileMeasurements], parameters: Mapping[str, Any]
    ) -> Mapping[str, float] | None:
        """Slides: the slide's measurements from its tiles' (in tile order), or ``None``.

        Called once per tiled job, in the service process, after every tile is in:
        keep it cheap (sums and sorts, no pixels). Tiles the planner found to be
        glass never ran and are not in ``tiles``. ``None`` (the default): the slide
        is measured by the merge alone (``count``, ``tiles``...), as it always was.
        """
        del tiles, parameters
        return None


class Algorithm(BaseAlgorithm):
    """A CPU-bound algorithm: ``run`` executes in a worker process."""

    cpu_bound: ClassVar[bool] = True

    @abc.abstractmethod
    def run(
        self, image: RGBImage, parameters: Mapping[str, Any], progress: Progress
    ) -> AlgorithmResult: ...


class AsyncAlgorithm(BaseAlgorithm):
    """An I/O-bound algorithm (e.g. a call to a remote inference server): runs on the event loop."""

    cpu_bound: ClassVar[bool] = False

    @abc.abstractmethod
    async def run(
        self, image: RGBImage, parameters: Mapping[str, Any], progress: Progress
    ) -> AlgorithmResult: ...


AnyAlgorithm = Algorithm | AsyncAlgorithm
