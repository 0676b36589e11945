"""SlideCache and read_tile: one handle per slide and process, never across a fork."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from primaa.imaging.slides import (
    Slide,
    SlideCache,
    SlideError,
    open_slide,
    plan_tiles,
    read_tile,
)
from tests.imaging.conftest import SVS


@pytest.fixture
def copies(tmp_path: Path) -> list[Path]:
    paths = [tmp_path / f"{name}.svs" for name in "abc"]
    for path in paths:
        shutil.copyfile(SVS, path)
    return paths


class Recording:
    """open_slide, remembering what it opened."""

    def __init__(self) -> None:
        self.opened: list[Slide] = []

    def __call__(self, path: Path) -> Slide:
        slide = open_slide(path)
        self.opened.append(slide)
        return slide


def test_a_slide_is_opened_once_and_the_least_recent_closed(copies: list[Path]) -> None:
    opener = Recording()
    cache = SlideCache(2, opener=opener)
    a, b, c = copies
    first = cache.get(a)
    assert cache.get(str(a)) is first
    cache.get(b)
    cache.get(a)
    cache.get(c)  # b is the least recently used
    assert len(opener.opened) == 3
    assert len(cache) == 2
    with pytest.raises(SlideError, match="closed"):
        opener.opened[1].read_region(0, 0, 4, 4)
    assert cache.get(a) is first
    cache.close()
    assert len(cache) == 0


def test_a_replaced_file_is_opened_again(copies: list[Path]) -> None:
    cache = SlideCache()
    path = copies[0]
    first = cache.get(path)
    os.utime(path, ns=(0, 0))
    assert cache.get(path) is not first
    cache.close()


def test_a_missing_file_is_a_slide_error(tmp_path: Path) -> None:
    with pytest.raises(SlideError, match="cannot read the slide"):
        SlideCache().get(tmp_path / "gone.svs")
    with pytest.raises(ValueError, match="capacity"):
        SlideCache(0)


_FORK = """
import os, sys
from primaa.imaging.slides import SlideCache
cache = SlideCache()
inherited = cache.get(sys.argv[1])
pid = os.fork()
if pid == 0:
    fresh = len(cache) == 0 and cache.get(sys.argv[1]) is not inherited
    os._exit(0 if fresh else 3)
_, status = os.waitpid(pid, 0)
assert cache.get(sys.argv[1]) is inherited
sys.exit(os.waitstatus_to_exitcode(status))
"""


def test_a_forked_worker_opens_its_own_handle(copies: list[Path]) -> None:
    # In a fresh single-threaded interpreter: forking pytest itself is not safe.
    done = subprocess.run([sys.executable, "-c", _FORK, str(copies[0])], check=False, timeout=60)
    assert done.returncode == 0


def test_read_tile_reads_the_tile() -> None:
    tile = plan_tiles((2220, 2967), downsample=4.0, border=8, tile_size=256)[5]
    with open_slide(SVS) as slide:
        expected = tile.read(slide)
    assert np.array_equal(read_tile(SVS, tile), expected)
    assert read_tile(SVS, tile).shape == (tile.height, tile.width, 3)
