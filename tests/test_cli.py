"""The ``primaa`` command as a user runs it: a real process, its output and its exit code."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import synthetic_he_png

NUCLEI_DATA = Path(__file__).parent / "data" / "nuclei"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff"}


def primaa(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m primaa.cli ARGS`` with no ``PRIMAA_*`` from the caller's environment."""
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("PRIMAA_")}
    child_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "primaa.cli", *args],
        cwd=cwd,
        env=child_env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _dev_image() -> Path | None:
    if not NUCLEI_DATA.is_dir():
        return None
    images = sorted(p for p in NUCLEI_DATA.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    return images[0] if images else None


@pytest.fixture
def he_image(tmp_path: Path) -> Path:
    """A development H&E image when the repository has one, else a synthetic H&E PNG."""
    source = _dev_image()
    if source is not None:
        copy = tmp_path / f"he{source.suffix}"
        shutil.copyfile(source, copy)
        return copy
    path = tmp_path / "he.png"
    path.write_bytes(synthetic_he_png())
    return path


def _points(feature: dict[str, Any]) -> list[list[float]]:
    assert feature["type"] == "Feature"
    assert feature["geometry"]["type"] == "MultiPoint"
    coordinates: list[list[float]] = feature["geometry"]["coordinates"]
    return coordinates


def test_algorithms_lists_the_builtin_ones(tmp_path: Path) -> None:
    result = primaa("algorithms", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    for name in ("poi_detection", "roi_detection"):
        assert name in rows, result.stdout
        assert "[builtin]" in rows[name]


def test_algorithms_json(tmp_path: Path) -> None:
    result = primaa("algorithms", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert isinstance(rows, list)
    for row in rows:
        for key in ("name", "version", "summary", "plugin"):
            assert isinstance(row[key], str), row
    by_name = {row["name"]: row for row in rows}
    assert by_name["poi_detection"]["plugin"] == "builtin"
    assert by_name["roi_detection"]["plugin"] == "builtin"
    assert by_name["poi_detection"]["summary"]


def test_run_prints_a_multipoint_feature(tmp_path: Path, he_image: Path) -> None:
    result = primaa("run", "poi_detection", str(he_image), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    feature = json.loads(result.stdout)
    points = _points(feature)
    assert points, "no nuclei found in an H&E image"
    properties = feature["properties"]
    assert properties["algorithm_name"] == "poi_detection"
    assert properties["status"] == "Completed"
    assert properties["image_url"] == he_image.resolve().as_uri()
    assert properties["measurements"]["count"] == len(points)


def test_run_with_out_writes_one_geojson_per_image(tmp_path: Path, he_image: Path) -> None:
    first = tmp_path / f"first{he_image.suffix}"
    second = tmp_path / "second.png"
    shutil.copyfile(he_image, first)
    second.write_bytes(synthetic_he_png(seed=1))
    out = tmp_path / "results"

    result = primaa(
        "run", "poi_detection", str(first), str(second), "--out", str(out), cwd=tmp_path
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert sorted(p.name for p in out.iterdir()) == ["first.geojson", "second.geojson"]
    for path, image in ((out / "first.geojson", first), (out / "second.geojson", second)):
        feature = json.loads(path.read_text())
        assert _points(feature)
        assert feature["properties"]["image_url"] == image.resolve().as_uri()
        assert str(path) in result.stderr


def test_several_images_need_out(tmp_path: Path, he_image: Path) -> None:
    result = primaa("run", "poi_detection", str(he_image), str(he_image), cwd=tmp_path)
    assert result.returncode == 2
    assert "--out" in result.stderr
    assert result.stdout == ""


def test_qupath_format_gives_detections(tmp_path: Path, he_image: Path) -> None:
    geojson = primaa("run", "poi_detection", str(he_image), cwd=tmp_path)
    qupath = primaa("run", "poi_detection", str(he_image), "--format", "qupath", cwd=tmp_path)
    assert qupath.returncode == 0, qupath.stderr
    collection = json.loads(qupath.stdout)
    assert collection["type"] == "FeatureCollection"
    features = collection["features"]
    assert len(features) == len(_points(json.loads(geojson.stdout)))
    for feature in features:
        assert feature["properties"]["objectType"] == "detection"
        assert feature["geometry"]["type"] == "Point"


def test_out_of_range_parameter_exits_2_naming_it(tmp_path: Path, he_image: Path) -> None:
    result = primaa("run", "poi_detection", str(he_image), "--param", "sensitivity=2", cwd=tmp_path)
    assert result.returncode == 2
    assert "sensitivity" in result.stderr
    assert result.stdout == ""


def test_malformed_parameter_exits_2(tmp_path: Path, he_image: Path) -> None:
    result = primaa("run", "poi_detection", str(he_image), "--param", "sensitivity", cwd=tmp_path)
    assert result.returncode == 2
    assert "NAME=VALUE" in result.stderr


def test_unknown_algorithm_exits_2_naming_the_installed_ones(
    tmp_path: Path, he_image: Path
) -> None:
    result = primaa("run", "nuclei_detection", str(he_image), cwd=tmp_path)
    assert result.returncode == 2
    assert "'nuclei_detection'" in result.stderr
    assert "poi_detection" in result.stderr
    assert "roi_detection" in result.stderr


def test_non_image_file_fails_saying_it_is_not_an_image(tmp_path: Path, he_image: Path) -> None:
    notes = tmp_path / "notes.png"
    notes.write_text("these are my notes, not a slide\n")
    alone = primaa("run", "poi_detection", str(notes), cwd=tmp_path)
    assert alone.returncode != 0
    assert "not an image" in alone.stderr
    assert str(notes) in alone.stderr
    assert alone.stdout == ""

    out = tmp_path / "out"
    mixed = primaa(
        "run", "poi_detection", str(notes), str(he_image), "--out", str(out), cwd=tmp_path
    )
    assert mixed.returncode != 0
    assert "not an image" in mixed.stderr
    assert [p.name for p in out.iterdir()] == [f"{he_image.stem}.geojson"]


def test_missing_image_fails_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "missing.png"
    result = primaa("run", "poi_detection", str(missing), cwd=tmp_path)
    assert result.returncode != 0
    assert str(missing) in result.stderr


def test_serve_with_bad_port_variable_exits_2_naming_it(tmp_path: Path) -> None:
    result = primaa("serve", cwd=tmp_path, env={"PRIMAA_PORT": "abc"})
    assert result.returncode == 2
    assert "PRIMAA_PORT" in result.stderr
    assert "'abc'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["serve", "algorithms"])
def test_config_with_unknown_key_exits_2_naming_it(tmp_path: Path, command: str) -> None:
    config = tmp_path / "primaa.toml"
    config.write_text("port = 8001\nworker = 2\n")
    result = primaa(command, "--config", str(config), cwd=tmp_path)
    assert result.returncode == 2
    assert "'worker'" in result.stderr
    assert str(config) in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    result = primaa("algorithms", "--config", str(missing), cwd=tmp_path)
    assert result.returncode == 2
    assert str(missing) in result.stderr
