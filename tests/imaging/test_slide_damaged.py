"""Damaged slides, as clients upload them: opening and reading raise SlideError or work.

Truncations and byte flips of a small built pyramid and of the real SVS, in the
headers (where the structure is) and anywhere. Never another exception: the
service shows SlideError's message to the client and any other would be a bug.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from primaa.imaging.slides import SlideError, open_slide
from tests.imaging.conftest import SOURCES, SVS
from tests.support.slides import BuiltSlide, build_slide

CASES = 30


@pytest.fixture(scope="module")
def small(slides_dir: Path) -> BuiltSlide:
    return build_slide(
        slides_dir / "small.tif",
        size=(1024, 768),
        sources=SOURCES,
        positions=[(64, 64), (512, 128)],
        tile_size=128,
    )


def _damage(data: bytes, case: int, rng: np.random.Generator) -> bytes:
    damaged = bytearray(data)
    if case % 3 == 0:
        return bytes(damaged[: int(rng.integers(8, len(damaged)))])
    flips, span = (20, min(len(damaged), 4096)) if case % 3 == 1 else (200, len(damaged))
    for offset in rng.integers(0, span, flips):
        damaged[int(offset)] = int(rng.integers(0, 256))
    return bytes(damaged)


# Pillow warns about TIFF tags pointing past the end of a damaged file, then skips them.
@pytest.mark.filterwarnings("ignore:Tag data larger than file:UserWarning")
@pytest.mark.parametrize("which", ["built", "svs"])
def test_damaged_slides_raise_slide_error_or_read(
    tmp_path: Path, small: BuiltSlide, which: str
) -> None:
    data = small.path.read_bytes() if which == "built" else SVS.read_bytes()
    rng = np.random.default_rng(7)
    outcomes = {"read": 0, "refused": 0}
    messages = []
    for case in range(CASES):
        path = tmp_path / f"{case}.tif"
        path.write_bytes(_damage(data, case, rng))
        try:
            with open_slide(path) as slide:
                width, height = slide.dimensions
                slide.read_region(0, 0, max(1, width // 8), max(1, height // 8), downsample=8.0)
                slide.read_region(0, 0, min(width, 256), min(height, 256))
        except SlideError as exc:
            messages.append(str(exc))
            outcomes["refused"] += 1
        else:
            outcomes["read"] += 1
    # Both happen: flips in pixel data often decode, truncations never do.
    assert outcomes["refused"] >= CASES // 3
    assert not [m for m in messages if str(tmp_path) in m]


def test_a_property_name_that_is_not_text_does_not_hide_the_resolution(tmp_path: Path) -> None:
    """OpenSlide lists such a name, then cannot find it again: the mpp is read by its key."""
    data = bytearray(SVS.read_bytes())
    at = data.index(b"LineCameraSkew")
    data[at + 12] = 0xE9
    path = tmp_path / "odd.svs"
    path.write_bytes(bytes(data))
    with open_slide(path) as slide:
        assert slide.mpp == pytest.approx(0.499)
