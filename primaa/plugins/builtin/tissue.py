"""``roi_detection``: tissue regions on bright-field (H&E) images, where glass shows through.

The detector itself lives in ``tissue_detector`` and is imported when the
algorithm runs, in a worker: the service process only needs the schema.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import marshmallow
from marshmallow import fields, validate

from primaa.plugins.algorithm import DOWNSAMPLE, Algorithm, AlgorithmResult, Progress, RGBImage


class TissueParameters(marshmallow.Schema):
    """Parameters of ``roi_detection``; areas and lengths are in full-resolution pixels."""

    min_area = fields.Float(
        load_default=5000.0,
        validate=validate.Range(min=0.0),
        metadata={
            "description": "Tissue regions smaller than this area (full-resolution px²) "
            "are dropped as dust or debris."
        },
    )
    min_hole_area = fields.Float(
        load_default=5000.0,
        validate=validate.Range(min=0.0),
        metadata={
            "description": "Glass inside tissue smaller than this area (full-resolution "
            "px²) is filled; larger holes are kept as polygon holes."
        },
    )
    simplify_tolerance = fields.Float(
        load_default=2.0,
        validate=validate.Range(min=0.0, max=1000.0),
        metadata={
            "description": "Outlines are simplified so that no vertex moves more than "
            "this distance (full-resolution px); 0 keeps every traced vertex."
        },
    )
    sensitivity = fields.Float(
        load_default=0.5,
        validate=validate.Range(min=0.0, max=1.0),
        metadata={
            "description": "0 to 1: higher values count fainter staining as tissue "
            "(and risk counting dirty glass)."
        },
    )
    working_size = fields.Integer(
        load_default=2048,
        validate=validate.Range(min=128, max=8192),
        metadata={
            "description": "The image is downsampled so its longest side is at most "
            "this many pixels before the mask is computed."
        },
    )


class RoiDetection(Algorithm):
    """Finds tissue regions (with their glass holes) as annotations."""

    name: ClassVar[str] = "roi_detection"
    version: ClassVar[str] = "0.1.0"
    summary: ClassVar[str] = "Tissue regions in bright-field (H&E) images, as polygons."
    description: ClassVar[str] = (
        "Separates stained tissue from bare glass using optical density at a reduced "
        "working resolution, removes specks, fills small gaps and keeps large glass "
        "holes, then returns one polygon per tissue region in full-resolution pixel "
        "coordinates (QuPath annotations classified 'Tissue')."
    )
    Parameters: ClassVar[type[marshmallow.Schema]] = TissueParameters
    #: On slides: the whole slide at 8 µm/px, in one piece (tissue outlines span any tile
    #: grid); a 75 x 25 mm slide is 9,400 x 3,100 px there.
    mpp: ClassVar[float | None] = 8.0
    tiled: ClassVar[bool] = False

    def run(
        self, image: RGBImage, parameters: Mapping[str, Any], progress: Progress
    ) -> AlgorithmResult:
        # Imported here, in the worker: the service process only needs the schema.
        from primaa.plugins.builtin.tissue_detector import detect_tissue

        scale = float(parameters.get(DOWNSAMPLE) or 1.0)
        if scale == 1.0:
            return detect_tissue(image, parameters, progress)
        # A slide read at ``scale`` level-0 pixels per pixel: the parameters are in
        # full-resolution pixels, and so must the areas be that come back.
        area = scale * scale
        found = detect_tissue(
            image,
            {
                **parameters,
                "min_area": parameters["min_area"] / area,
                "min_hole_area": parameters["min_hole_area"] / area,
                "simplify_tolerance": parameters["simplify_tolerance"] / scale,
            },
            progress,
        )
        return dataclasses.replace(
            found,
            measurements={
                **found.measurements,
                "tissue_area_px": found.measurements["tissue_area_px"] * area,
            },
            object_measurements=[
                {**m, "area_px": m["area_px"] * area} for m in found.object_measurements or ()
            ],
        )
