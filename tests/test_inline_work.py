"""Small work is done on the event loop, large work still in a thread."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from primaa.execution import on_loop
from primaa.execution.on_loop import INLINE_DECODE_PIXELS, LoopExecutor
from primaa.jobs.large_results import INLINE_ENCODE_VALUES, _at_most
from primaa.jobs.model import Job
from primaa.jobs.ports import Task
from primaa.jobs.runner import _flat_pixels
from primaa.plugins.registry import load_registry
from tests.conftest import TEST_PLUGINS


@pytest.mark.parametrize(
    ("pixels", "on_the_loop"),
    [(64 * 64, True), (INLINE_DECODE_PIXELS + 1, False), (None, False)],
)
async def test_only_an_image_described_as_tiny_is_decoded_on_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pixels: int | None, on_the_loop: bool
) -> None:
    path = tmp_path / "tile.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(path)
    decoded_in: list[int] = []
    decode = on_loop.decode_image

    def recording(*args: Any, **kwargs: Any) -> Any:
        decoded_in.append(threading.get_ident())
        return decode(*args, **kwargs)

    monkeypatch.setattr(on_loop, "decode_image", recording)
    executor = LoopExecutor(load_registry(modules=TEST_PLUGINS), max_pixels=10**6)
    task = Task("j1", "test_async", path, {"seconds": 0, "steps": 1}, pixels=pixels)
    result = await executor.run(task)
    assert result.measurements is not None
    assert len(decoded_in) == 1
    assert (decoded_in[0] == threading.get_ident()) is on_the_loop


def test_results_are_counted_up_to_the_budget() -> None:
    points = {"type": "MultiPoint", "coordinates": [[1.0, 2.0]] * 10}
    assert _at_most({"geometry": points, "properties": {"count": 10}}, 40)
    assert not _at_most({"geometry": points}, 20)
    many = {"coordinates": [[float(i), 0.0] for i in range(INLINE_ENCODE_VALUES)]}
    assert not _at_most(many, INLINE_ENCODE_VALUES)
    assert _at_most({}, 1)


def test_a_task_carries_the_pixels_of_a_flat_image_as_described() -> None:
    job = Job(job_id="j1", algorithm="a", parameters={})
    flat = {"kind": "flat", "width": 640, "height": 480}
    assert _flat_pixels(job.evolve(image=flat)) == 640 * 480
    assert _flat_pixels(job.evolve(image={**flat, "kind": "slide"})) is None
    assert _flat_pixels(job) is None
