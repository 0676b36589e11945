"""``poi_detection_net`` on a real SVS slide, tile by tile, as an operator runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from primaa.evaluation import score_points

#: A real Aperio slide of H&E skin at 0.499 µm/px (CC0), in primaa's own test data.
SVS = Path(__file__).resolve().parents[3] / "tests" / "data" / "CMU-1-Small-Region.svs"


def _run(algorithm: str, cwd: Path) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRIMAA_")}
    env["PRIMAA_SLIDE_TILE_SIZE"] = "1024"
    result = subprocess.run(
        [sys.executable, "-m", "primaa.cli", "run", algorithm, str(SVS), "--workers", "1"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    feature: dict[str, Any] = json.loads(result.stdout)
    return feature


def test_slide_is_tiled_and_agrees_with_the_classical_detector(tmp_path: Path) -> None:
    net = _run("poi_detection_net", tmp_path)
    classical = _run("poi_detection", tmp_path)
    measurements = net["properties"]["measurements"]
    assert measurements["tiles"] > 1, "run tile by tile at 0.5 µm/px"
    points = np.asarray(net["geometry"]["coordinates"], dtype=np.float64)
    assert measurements["count"] == len(points) > 1000
    assert (points >= 0).all()
    assert (points[:, 0] < 2220).all()
    assert (points[:, 1] < 2967).all()
    reference = np.asarray(classical["geometry"]["coordinates"], dtype=np.float64)
    agreement = score_points(points, reference, 4.0)
    assert agreement.f1 > 0.6, agreement
