"""``primaa run`` on slides: tiles across ``--workers`` processes, a progress bar on a
terminal only, and the merged GeoJSON in level-0 coordinates."""

from __future__ import annotations

import io
import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial import cKDTree

from primaa.cli_slides import ProgressBar
from tests.support.env import child_env
from tests.support.slides import BuiltSlide, build_dotted_slide
from tests.test_cli import primaa

SVS = Path(__file__).resolve().parent / "data" / "CMU-1-Small-Region.svs"
SLIDE_ENV = {"PRIMAA_PLUGINS": "tests.support.slide_algorithms", "PRIMAA_SLIDE_TILE_SIZE": "512"}


@pytest.fixture(scope="module")
def dotted(tmp_path_factory: pytest.TempPathFactory) -> BuiltSlide:
    return build_dotted_slide(tmp_path_factory.mktemp("dots") / "dots.tif", size=(4096, 3072))


def test_run_tiles_a_slide_across_workers_and_prints_the_merged_feature(
    dotted: BuiltSlide, tmp_path: Path
) -> None:
    result = primaa(
        "run", "test_dots", str(dotted.path), "--workers", "2", cwd=tmp_path, env=SLIDE_ENV
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", "nothing but the result when the output is not a terminal"
    feature = json.loads(result.stdout)
    found = np.asarray(feature["geometry"]["coordinates"], np.float64)
    assert len(found) == len(dotted.centres)
    assert cKDTree(dotted.centres).query(found)[0].max() <= 1.5
    assert feature["properties"]["measurements"]["tiles"] == 20
    pids = {m["pid"] for m in feature["properties"]["object_measurements"]}
    assert len(pids) == 2, "--workers 2: both worker processes took tiles"


def test_run_shows_tiles_done_over_total_on_a_terminal(dotted: BuiltSlide, tmp_path: Path) -> None:
    leader, follower = pty.openpty()
    env = child_env(SLIDE_ENV)
    output = tmp_path / "out.geojson"
    with output.open("w") as stdout:
        process = subprocess.Popen(
            [sys.executable, "-m", "primaa.cli", "run", "test_dots", str(dotted.path)],
            cwd=tmp_path,
            env=env,
            stdout=stdout,
            stderr=follower,
        )
    os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:
            break
        if not chunk:
            break
        shown += chunk
    assert process.wait(timeout=120) == 0
    os.close(leader)
    assert json.loads(output.read_text())["type"] == "Feature"
    text = shown.decode()
    assert "dots.tif: [" in text
    assert "] 20/20 tiles" in text
    assert "] 1/20 tiles" in text or "] 2/20 tiles" in text, "redrawn as tiles finish"


def test_progress_bar_draws_only_on_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal, pipe = Terminal(), io.StringIO()
    for stream in (terminal, pipe):
        bar = ProgressBar("slide.svs", 4, stream)
        for done in range(1, 5):
            bar.update(done / 4)
        bar.close()
    assert pipe.getvalue() == ""
    assert terminal.getvalue().count("\r") == 4
    assert terminal.getvalue().endswith("] 4/4 tiles\n")


def test_run_poi_detection_on_an_svs_answers_in_level0_coordinates(tmp_path: Path) -> None:
    env = {"PRIMAA_SLIDE_TILE_SIZE": "1024"}
    result = primaa("run", "poi_detection", str(SVS), "--workers", "2", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    feature = json.loads(result.stdout)
    points = np.asarray(feature["geometry"]["coordinates"], np.float64)
    assert len(points) > 1000
    assert points[:, 0].max() > 2000, "level 0 of a 2220 x 2967 slide"
    assert points[:, 1].max() > 2700
    assert feature["properties"]["measurements"]["tiles"] >= 4


def test_run_refuses_a_slide_an_undeclared_algorithm_cannot_take(tmp_path: Path) -> None:
    env = {"PRIMAA_PLUGINS": "tests.support.algorithms", "PRIMAA_MAX_IMAGE_PIXELS": "1000000"}
    result = primaa("run", "test_sleep", str(SVS), cwd=tmp_path, env=env)
    assert result.returncode == 1
    assert "declares no resolution (mpp)" in result.stderr
