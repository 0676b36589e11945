"""``poi_detection_net``: nucleus centres found by a small convolutional network."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import marshmallow
from marshmallow import fields, validate

from primaa import PIXEL_SIZE_UM, Algorithm, AlgorithmResult, Progress, RGBImage, multipoint
from primaa_nuclei_net import __version__
from primaa_nuclei_net.scale import DEFAULT_IMAGE_MPP, NET_MPP

#: Heat-map level a centre must exceed; chosen on the held-out predictions of two of the
#: three cross-validation folds and checked on the third (README, Accuracy): F1 at 8 px
#: moves by under 0.01 from 0.45 to 0.55. Lower than 0.3's 0.6: the network learns
#: from its teachers' heat map too, whose peaks are under 1.
DEFAULT_THRESHOLD = 0.5


class NetParameters(marshmallow.Schema):
    """Parameters of ``poi_detection_net``; all are optional."""

    threshold = fields.Float(
        load_default=DEFAULT_THRESHOLD,
        validate=validate.Range(min=0.01, max=0.99),
        allow_nan=False,
        metadata={
            "description": "Heat-map level (0-1) a nucleus centre must reach: lower finds "
            "fainter nuclei and more false detections, higher keeps only clear ones."
        },
    )
    mpp = fields.Float(
        load_default=None,
        allow_none=True,
        validate=validate.Range(min=0.05, max=2.0),
        allow_nan=False,
        metadata={
            "description": "Pixel size of the image in microns per pixel. Default: the "
            "slide's own on slides, else 0.25 (40x, nuclei about 22 px across). The "
            "network works at 0.5 µm/px and the image is resampled to it."
        },
    )


class PoiDetectionNet(Algorithm):
    """Nucleus centres as the peaks of a heat map predicted by a small U-Net (ONNX Runtime)."""

    name: ClassVar[str] = "poi_detection_net"
    version: ClassVar[str] = __version__
    summary: ClassVar[str] = "Nucleus centres in H&E images, learned detector (small CNN)"
    description: ClassVar[str] = (
        "Detects cell nuclei in hematoxylin and eosin (H&E) bright-field images with a "
        "small fully convolutional network (87k parameters) trained on brain tumour and "
        "multi-organ (MoNuSeg) tiles, and returns one point per nucleus centre as a "
        "MultiPoint in full-resolution pixel coordinates [x, y], like poi_detection. The "
        "image is resampled to 0.5 µm/px (from mpp, else the slide's resolution, else "
        "0.25 µm/px). The weights derive from CC BY-NC-SA 4.0 data: not for commercial use."
    )
    Parameters: ClassVar[type[marshmallow.Schema]] = NetParameters
    #: On slides: tiles at the network's own resolution, with the context its
    #: convolutions see around a nucleus at a tile's edge.
    mpp: ClassVar[float | None] = NET_MPP
    border_um: ClassVar[float] = 32.0

    def run(
        self, image: RGBImage, parameters: Mapping[str, Any], progress: Progress
    ) -> AlgorithmResult:
        # Imported here, in the worker: the service process only needs the schema.
        from primaa_nuclei_net import detector

        progress(0.0)
        image_mpp = parameters.get("mpp") or parameters.get(PIXEL_SIZE_UM) or DEFAULT_IMAGE_MPP
        points = detector.detect(image, float(image_mpp), float(parameters["threshold"]), progress)
        height, width = image.shape[:2]
        megapixels = height * width / 1e6
        count = len(points)
        return AlgorithmResult(
            geometry=multipoint(points),
            measurements={
                "count": count,
                "density_per_megapixel": round(count / megapixels, 3) if megapixels else 0.0,
            },
            object_type="detection",
            classification="Nucleus",
        )
