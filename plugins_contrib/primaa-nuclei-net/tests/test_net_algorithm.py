"""``poi_detection_net`` on real tiles: output shape, accuracy, glass, resolution, tiling."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image
from primaa_nuclei_net import detector, peaks
from primaa_nuclei_net.algorithm import PoiDetectionNet

from primaa import JobCancelled
from primaa.evaluation import micro_average, score_points

#: Brain tumour tiles of nuclei-dev, copied into primaa's own test data.
DATA = Path(__file__).resolve().parents[3] / "tests" / "data" / "nuclei"
#: The two dev sets the network was trained on, beside the checkout (the multi-organ one is
#: CC BY-NC-SA, never copied into the repository).
DEV_SETS = Path(__file__).resolve().parents[4] / "shared" / "data"

Points = npt.NDArray[np.float64]


def _noop(fraction: float) -> None:
    pass


def _run(image: npt.NDArray[np.uint8], **parameters: Any) -> Points:
    algorithm = PoiDetectionNet()
    result = algorithm.run(image, algorithm.Parameters().load(parameters), _noop)
    assert result.geometry is not None
    assert result.geometry["type"] == "MultiPoint"
    assert result.measurements["count"] == len(result.geometry["coordinates"])
    assert (result.object_type, result.classification) == ("detection", "Nucleus")
    return np.asarray(result.geometry["coordinates"], dtype=np.float64).reshape(-1, 2)


def _load(pngs: list[Path]) -> list[tuple[npt.NDArray[np.uint8], Points]]:
    """Each tile and its annotated ``[x, y]`` centres (the CSV beside it)."""
    return [
        (
            np.asarray(Image.open(png).convert("RGB")),
            np.loadtxt(png.with_suffix(".csv"), delimiter=",", skiprows=1, ndmin=2),
        )
        for png in pngs
    ]


def _tiles() -> list[tuple[npt.NDArray[np.uint8], Points]]:
    pngs = sorted(DATA.glob("*.png"))
    assert pngs, f"no test tiles in {DATA}"
    return _load(pngs)


def test_points_are_x_y_pixels_inside_the_image() -> None:
    image, _ = _tiles()[0]
    wide = np.ascontiguousarray(image[:300])  # not square: an x/y swap would leave it
    points = _run(wide)
    assert len(points) > 20
    assert points[:, 0].max() > 300, "x spans the 512 px width"
    assert (points >= -0.5).all()
    assert (points[:, 0] <= 511.5).all()
    assert (points[:, 1] <= 299.5).all()


def test_finds_the_annotated_brain_tumour_nuclei() -> None:
    counts = [score_points(_run(image), truth, 8.0) for image, truth in _tiles()]
    total = micro_average(counts)
    # Trained on these tiles among others: a working model is above 0.85; a broken or
    # untrained one (all zeros, noise, swapped channels) is far below.
    assert total.f1 > 0.8, total


@pytest.mark.parametrize(
    ("folder", "floor"), [("nuclei-dev", 0.87), ("nuclei-multiorgan-dev", 0.80)]
)
def test_dev_set_f1_floor(folder: str, floor: float) -> None:
    """Issue 14's dev-set targets, on the whole of each set.

    The network was trained on these tiles (F1 at 8 px 0.895 and 0.827 for 0.4): a
    floor against a broken model or pre- or post-processing, not an estimate of accuracy
    elsewhere, which is the cross-validated figure in the README.
    """
    pngs = sorted((DEV_SETS / folder).glob("*.png"))
    if not pngs:
        pytest.skip(f"dev set {folder} not found at {DEV_SETS} (it is not in the repository)")
    counts = [score_points(_run(image), truth, 8.0) for image, truth in _load(pngs)]
    assert len(counts) >= 10
    assert micro_average(counts).f1 >= floor


def test_blank_glass_and_pale_eosin_give_no_nuclei() -> None:
    rng = np.random.default_rng(0)
    for colour in [(242, 242, 240), (236, 196, 222)]:
        image = np.clip(rng.normal(colour, 3.0, (512, 512, 3)), 0, 255).astype(np.uint8)
        assert len(_run(image)) <= 2


def test_stated_resolution_is_followed() -> None:
    image, truth = _tiles()[0]
    plain = score_points(_run(image), truth, 8.0).f1
    enlarged = np.asarray(Image.fromarray(image).resize((768, 768), Image.Resampling.BICUBIC))
    moved = truth * 1.5 + 0.25  # the same pixel centres, 1.5x larger
    as_given = score_points(_run(enlarged, mpp=0.25 / 1.5), moved, 12.0).f1
    assert as_given == pytest.approx(plain, abs=0.02)
    # Read as 0.25 µm/px the nuclei look 1.5x too large: some are split in two.
    assumed = score_points(_run(enlarged), moved, 12.0).f1
    assert assumed < as_given - 0.03


def test_windows_leave_no_seam_in_the_heat_map() -> None:
    image, _ = _tiles()[0]
    small = np.tile(image[::2, ::2], (3, 3, 1))[:700, :600]  # 0.5 µm/px, several windows
    assert small.shape[0] > detector.CORE
    tiled = detector.heat_map(small)
    whole = detector._run(small)
    assert tiled.shape == whole.shape == (350, 300)  # 1 µm/px: half the input's sides
    assert np.abs(tiled - whole).max() < 0.02
    assert detector.heat_map(small[:699, :599]).shape == (350, 300)  # odd sides round up


def _glass(shape: tuple[int, int], seed: int = 1) -> npt.NDArray[np.uint8]:
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal((240, 235, 240), 3.0, (*shape, 3)), 0, 255).astype(np.uint8)


def test_glass_windows_are_skipped_without_changing_the_points(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    image, _ = _tiles()[0]
    canvas = _glass((1400, 1400))  # 3 x 3 windows at 0.5 µm/px
    canvas[:256, :256] = image[::2, ::2]  # tissue in the first window only
    real_run = detector._run
    shapes: list[tuple[int, ...]] = []

    def counted(window: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        shapes.append(window.shape)
        return real_run(window)

    monkeypatch.setattr(detector, "_run", counted)
    skipping = detector.heat_map(canvas)
    assert len(shapes) == 1
    monkeypatch.setattr(detector, "_is_glass", lambda window: False)
    every = detector.heat_map(canvas)
    assert len(shapes) == 1 + 9
    np.testing.assert_array_equal(skipping[:256, :256], every[:256, :256])  # the first core
    assert every.max() > 0.6  # nuclei in the tissue
    np.testing.assert_array_equal(peaks.find_peaks(skipping, 0.6), peaks.find_peaks(every, 0.6))


def test_a_nucleus_or_pale_eosin_is_not_glass() -> None:
    window = _glass((640, 640))
    assert detector._is_glass(window)
    rows, columns = np.ogrid[:640, :640]
    nucleus = (rows - 300) ** 2 + (columns - 301) ** 2 <= 5**2  # 81 px, under a nucleus
    with_nucleus = window.copy()
    with_nucleus[nucleus] = (120, 80, 160)
    assert not detector._is_glass(with_nucleus)
    pale_eosin = np.clip(_glass((640, 640)).astype(int) - (4, 39, 18), 0, 255).astype(np.uint8)
    assert not detector._is_glass(pale_eosin)


def test_a_cancelled_job_stops() -> None:
    image, _ = _tiles()[0]

    def cancel(fraction: float) -> None:
        if fraction > 0:
            raise JobCancelled

    algorithm = PoiDetectionNet()
    with pytest.raises(JobCancelled):
        algorithm.run(image, algorithm.Parameters().load({}), cancel)
