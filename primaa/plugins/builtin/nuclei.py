"""The built-in ``poi_detection`` algorithm: nucleus centres in H&E bright-field images."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from primaa.plugins.algorithm import (
    DOWNSAMPLE,
    PIXEL_SIZE_UM,
    Algorithm,
    AlgorithmResult,
    Progress,
    RGBImage,
    multipoint,
)
from primaa.plugins.builtin.stain import EOSIN, HEMATOXYLIN, stain_matrix

#: Prior nucleus diameter in pixels, 40x H&E (0.25 µm per pixel), when the image does not
#: clearly show another.
DEFAULT_DIAMETER = 22.0
#: The same prior in microns, used with ``mpp``.
DEFAULT_DIAMETER_UM = 5.5
MIN_DIAMETER, MAX_DIAMETER = 4.0, 200.0
#: Range the estimated diameter is kept in: pixels without ``mpp``, microns with it.
AUTO_RANGE_PX = (8.0, 80.0)
AUTO_RANGE_UM = (3.5, 15.0)


def _stain_vector(description: str) -> fields.List:
    return fields.List(
        fields.Float(validate=validate.Range(min=0.0, max=10.0), allow_nan=False),
        validate=validate.Length(equal=3),
        load_default=None,
        allow_none=True,
        metadata={"description": description},
    )


class NucleiParameters(Schema):
    """Parameters of ``poi_detection``; all are optional."""

    nucleus_diameter = fields.Float(
        load_default=None,
        allow_none=True,
        validate=validate.Range(min=MIN_DIAMETER, max=MAX_DIAMETER),
        allow_nan=False,
        metadata={
            "description": "Expected nucleus diameter in pixels. When omitted (the "
            "default), it is estimated from the image: 3.5-15 µm when mpp is given, "
            "otherwise 8-80 px, staying at 22 px (5.5 µm) unless the image clearly "
            "shows other sizes. A value given here is used as is."
        },
    )
    nucleus_diameter_um = fields.Float(
        load_default=None,
        allow_none=True,
        validate=validate.Range(min=1.0, max=100.0),
        allow_nan=False,
        metadata={"description": "Expected nucleus diameter in microns; needs mpp."},
    )
    mpp = fields.Float(
        load_default=None,
        allow_none=True,
        validate=validate.Range(min=0.01, max=50.0, min_inclusive=True),
        allow_nan=False,
        metadata={
            "description": "Pixel size in microns per pixel: the estimated nucleus "
            "diameter is then reasoned in microns; needed by nucleus_diameter_um."
        },
    )
    sensitivity = fields.Float(
        load_default=0.5,
        validate=validate.Range(min=0.0, max=1.0),
        allow_nan=False,
        metadata={
            "description": "From 0 to 1: higher finds fainter nuclei and more false "
            "detections, lower keeps only clear ones."
        },
    )
    hematoxylin_vector = _stain_vector(
        "Optical-density RGB vector of hematoxylin, e.g. [0.65, 0.70, 0.29] "
        "(the default, Ruifrok & Johnston); normalised before use."
    )
    eosin_vector = _stain_vector(
        "Optical-density RGB vector of eosin, e.g. [0.07, 0.99, 0.11] (the default); "
        "normalised before use."
    )

    @validates_schema(pass_original=True)
    def _check_combinations(
        self, data: Mapping[str, Any], original: Mapping[str, Any], **kwargs: Any
    ) -> None:
        has_um = data.get("nucleus_diameter_um") is not None
        has_mpp = data.get("mpp") is not None
        if has_um and not has_mpp:
            raise ValidationError("nucleus_diameter_um needs mpp", "nucleus_diameter_um")
        if has_um and isinstance(original, Mapping) and "nucleus_diameter" in original:
            raise ValidationError(
                "give nucleus_diameter or nucleus_diameter_um with mpp, not both",
                "nucleus_diameter",
            )
        if has_um:
            pixels = data["nucleus_diameter_um"] / data["mpp"]
            if not MIN_DIAMETER <= pixels <= MAX_DIAMETER:
                raise ValidationError(
                    f"nucleus_diameter_um / mpp = {pixels:.1f} px, outside "
                    f"{MIN_DIAMETER:g}-{MAX_DIAMETER:g} px",
                    "nucleus_diameter_um",
                )
        h = data.get("hematoxylin_vector")
        e = data.get("eosin_vector")
        if h is not None or e is not None:
            try:
                stain_matrix(h if h is not None else HEMATOXYLIN, e if e is not None else EOSIN)
            except ValueError as exc:
                raise ValidationError(str(exc), "hematoxylin_vector") from exc


def diameter_in_pixels(parameters: Mapping[str, Any]) -> float | None:
    """The nucleus diameter the parameters ask for, in pixels; ``None``: estimate it."""
    um, mpp = parameters.get("nucleus_diameter_um"), parameters.get("mpp")
    if um is not None and mpp is not None:
        return float(um) / float(mpp)
    given = parameters.get("nucleus_diameter")
    return None if given is None else float(given)


def auto_diameter_range(parameters: Mapping[str, Any]) -> tuple[float, tuple[float, float]]:
    """Prior diameter and the range of the estimate, in pixels, from ``mpp`` if given."""
    mpp = parameters.get("mpp")
    if mpp is None:
        return DEFAULT_DIAMETER, AUTO_RANGE_PX
    low, high = (max(MIN_DIAMETER, um / float(mpp)) for um in AUTO_RANGE_UM)
    high = min(MAX_DIAMETER, max(high, low))
    return min(max(DEFAULT_DIAMETER_UM / float(mpp), low), high), (low, high)


class PoiDetection(Algorithm):
    """Finds nucleus centres by colour deconvolution and blob detection at the nucleus scale."""

    name: ClassVar[str] = "poi_detection"
    version: ClassVar[str] = "1.0.0"
    summary: ClassVar[str] = "Nucleus centres in H&E bright-field images"
    description: ClassVar[str] = (
        "Detects cell nuclei in hematoxylin and eosin (H&E) bright-field images and "
        "returns one point per nucleus centre, as a MultiPoint in full-resolution pixel "
        "coordinates [x, y] (origin top-left). Hematoxylin is separated from eosin by "
        "colour deconvolution; nuclei are found as hematoxylin blobs of the expected "
        "size, estimated from the image unless given. Large images are processed in "
        "overlapping tiles; whole-slide images in tiles at 0.5 µm/px across every worker, "
        "at a diameter of 5.5 µm unless given. Classical image analysis, no learned "
        "model: give mpp so that sizes are reasoned in microns, nucleus_diameter (or "
        "nucleus_diameter_um and mpp) to impose a size, and the stain vectors for unusual "
        "staining."
    )
    Parameters: ClassVar[type[Schema]] = NucleiParameters
    #: On slides: tiles at 0.5 µm/px, where a nucleus is about 11 px across (the size the
    #: detector reduces to anyway), with 24 µm of context: a large nucleus and the
    #: detector's filters around it.
    mpp: ClassVar[float | None] = 0.5
    border_um: ClassVar[float] = 24.0

    def run(
        self, image: RGBImage, parameters: Mapping[str, Any], progress: Progress
    ) -> AlgorithmResult:
        if parameters.get("mpp") is None and parameters.get(PIXEL_SIZE_UM) is not None:
            # A slide tile: sizes are reasoned in microns, unless the client gave mpp.
            parameters = {**parameters, "mpp": parameters[PIXEL_SIZE_UM]}
        # Imported here, in the worker: the service process only needs the schema (no SciPy).
        from primaa.plugins.builtin import nuclei_detector, nuclei_scale

        h_vec: Sequence[float] = parameters.get("hematoxylin_vector") or HEMATOXYLIN
        e_vec: Sequence[float] = parameters.get("eosin_vector") or EOSIN
        diameter = diameter_in_pixels(parameters)
        hematoxylin = None
        if diameter is None and DOWNSAMPLE in parameters:
            # A tile of a slide: every tile detects at the same size, the prior (5.5 µm
            # where the slide states its resolution); estimated tile by tile it would
            # change from tile to tile with what each happens to hold.
            diameter = auto_diameter_range(parameters)[0]
        if diameter is None:
            prior, bounds = auto_diameter_range(parameters)
            chosen = nuclei_scale.choose_diameter(image, prior, bounds, h_vec, e_vec)
            diameter = chosen.diameter or prior
            if chosen.factor == nuclei_detector.working_factor(diameter):
                hematoxylin = chosen.hematoxylin
        points = nuclei_detector.detect_nuclei_tiled(
            image,
            diameter=diameter,
            sensitivity=float(parameters.get("sensitivity", 0.5)),
            hematoxylin_vector=h_vec,
            eosin_vector=e_vec,
            progress=progress,
            hematoxylin=hematoxylin,
        )
        height, width = image.shape[:2]
        megapixels = height * width / 1e6
        count = len(points)
        return AlgorithmResult(
            geometry=multipoint(points),
            measurements={
                "count": count,
                "nucleus_diameter_px": round(diameter, 1),
                "density_per_megapixel": round(count / megapixels, 3) if megapixels else 0.0,
            },
            object_type="detection",
            classification="Nucleus",
        )
