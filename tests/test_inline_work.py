"""Small work is done on the event loop, large work still in a thread: the size tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from primaa.execution.on_loop import INLINE_DECODE_BYTES, _tiny
from primaa.jobs.large_results import INLINE_ENCODE_VALUES, _at_most


def test_a_small_file_holding_a_large_image_is_not_decoded_on_the_loop(tmp_path: Path) -> None:
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(small)
    bomb = tmp_path / "bomb.png"
    Image.fromarray(np.zeros((2000, 2000, 3), np.uint8)).save(bomb, optimize=True)
    assert bomb.stat().st_size <= INLINE_DECODE_BYTES  # small on disk, 4 MP decoded
    assert _tiny(small)
    assert not _tiny(bomb)
    assert not _tiny(tmp_path / "missing.png")
    (tmp_path / "text.png").write_text("not an image")
    assert not _tiny(tmp_path / "text.png")


def test_results_are_counted_up_to_the_budget() -> None:
    points = {"type": "MultiPoint", "coordinates": [[1.0, 2.0]] * 10}
    assert _at_most({"geometry": points, "properties": {"count": 10}}, 40)
    assert not _at_most({"geometry": points}, 20)
    many = {"coordinates": [[float(i), 0.0] for i in range(INLINE_ENCODE_VALUES)]}
    assert not _at_most(many, INLINE_ENCODE_VALUES)
    assert _at_most({}, 1)
