"""``image_qc`` end to end: parameters, verdicts, progress, a real scan."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import marshmallow
import numpy as np
import pytest
from PIL import Image
from primaa_qc.algorithm import ImageQC
from qc_synthetic import GLASS, blurred, flat, nuclei_texture

from primaa import JobCancelled, RGBImage

REAL_SCAN = Path(__file__).parent / "data" / "TCGA-DU-5847-R01_s1_crop256.png"


def run(image: RGBImage, **parameters: Any) -> Mapping[str, float]:
    algorithm = ImageQC()
    loaded = algorithm.Parameters().load(parameters)
    return algorithm.run(image, loaded, lambda fraction: None).measurements


def test_every_measurement_is_a_finite_float() -> None:
    measurements = run(nuclei_texture())
    assert set(measurements) == {
        "focus_laplacian_variance",
        "focus_gradient_energy",
        "is_blurry",
        "tissue_fraction",
        "hematoxylin_od_mean",
        "eosin_od_mean",
        "brightness",
        "contrast",
        "pen_mark_fraction",
        "dark_fraction",
        "saturated_fraction",
        "qc_pass",
    }
    assert all(isinstance(v, float) and np.isfinite(v) for v in measurements.values())


def test_sharp_texture_passes_and_blurred_texture_is_flagged() -> None:
    sharp = run(nuclei_texture())
    soft = run(blurred(nuclei_texture(), 2.0))
    assert sharp["focus_laplacian_variance"] > soft["focus_laplacian_variance"]
    assert sharp["focus_gradient_energy"] > soft["focus_gradient_energy"]
    assert (sharp["is_blurry"], sharp["qc_pass"]) == (0.0, 1.0)
    assert (soft["is_blurry"], soft["qc_pass"]) == (1.0, 0.0)


def test_blur_threshold_decides_is_blurry() -> None:
    score = run(nuclei_texture())["focus_laplacian_variance"]
    assert run(nuclei_texture(), blur_threshold=score * 0.9)["is_blurry"] == 0.0
    assert run(nuclei_texture(), blur_threshold=score * 1.1)["is_blurry"] == 1.0


def test_empty_glass_has_no_tissue_and_fails() -> None:
    measurements = run(flat(GLASS))
    assert measurements["tissue_fraction"] == pytest.approx(0.0, abs=1e-6)
    assert measurements["hematoxylin_od_mean"] == 0.0
    assert measurements["qc_pass"] == 0.0
    assert measurements["brightness"] > 0.9


def test_ink_fails_the_scan_above_the_limit() -> None:
    image = nuclei_texture()
    image[:, :20] = (30, 150, 60)  # a green marker line along the left edge, ~8 % of the image
    measurements = run(image)
    assert measurements["pen_mark_fraction"] == pytest.approx(20 / 256, abs=1e-6)
    assert measurements["saturated_fraction"] >= measurements["pen_mark_fraction"]
    assert measurements["qc_pass"] == 0.0
    assert run(image, max_saturated_fraction=0.1)["qc_pass"] == 1.0


def test_mostly_glass_fails_on_tissue_fraction_alone() -> None:
    image = np.empty((256, 256, 3), dtype=np.uint8)
    image[:] = GLASS
    image[:, :16] = nuclei_texture()[:, :16]
    measurements = run(image, blur_threshold=0.0)
    assert measurements["tissue_fraction"] == pytest.approx(16 / 256, abs=0.01)
    assert measurements["qc_pass"] == 0.0
    assert run(image, blur_threshold=0.0, min_tissue_fraction=0.05)["qc_pass"] == 1.0


def test_real_scan_passes_and_its_blurred_copy_does_not() -> None:
    scan = np.asarray(Image.open(REAL_SCAN).convert("RGB"))
    sharp = run(scan)
    soft = run(blurred(scan, 1.5))
    assert sharp["qc_pass"] == 1.0
    assert sharp["tissue_fraction"] > 0.9
    assert 0.1 < sharp["hematoxylin_od_mean"] < 1.5
    assert 0.1 < sharp["eosin_od_mean"] < 1.5
    assert sharp["saturated_fraction"] < 0.001
    assert soft["is_blurry"] == 1.0
    assert sharp["focus_laplacian_variance"] > 5 * soft["focus_laplacian_variance"]


def test_large_image_is_measured_downsampled_with_progress_to_the_end() -> None:
    image = np.tile(nuclei_texture(512), (6, 5, 1))  # 3072 x 2560
    fractions: list[float] = []

    def progress(fraction: float) -> None:
        fractions.append(fraction)

    algorithm = ImageQC()
    result = algorithm.run(image, algorithm.Parameters().load({}), progress)
    assert result.geometry is None
    assert fractions == sorted(fractions)
    assert fractions[0] == 0.0
    assert fractions[-1] == 1.0
    assert len(fractions) >= 4
    assert result.measurements["tissue_fraction"] == pytest.approx(1.0)
    assert result.measurements["is_blurry"] == 0.0


def test_cancellation_raised_by_progress_propagates() -> None:
    def cancelled(fraction: float) -> None:
        if fraction > 0.0:
            raise JobCancelled

    algorithm = ImageQC()
    with pytest.raises(JobCancelled):
        algorithm.run(nuclei_texture(), algorithm.Parameters().load({}), cancelled)


def test_parameters_have_defaults_descriptions_and_ranges() -> None:
    schema = ImageQC.Parameters()
    defaults = schema.load({})
    assert defaults["working_size"] == 2048
    for name, field in schema.fields.items():
        assert field.metadata.get("description"), name
    with pytest.raises(marshmallow.ValidationError, match="min_tissue_fraction"):
        schema.load({"min_tissue_fraction": 1.5})
    with pytest.raises(marshmallow.ValidationError, match="blur_threshold"):
        schema.load({"blur_threshold": -1})
    with pytest.raises(marshmallow.ValidationError, match="unknown"):
        schema.load({"unknown": 1})
