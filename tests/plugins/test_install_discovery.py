"""Plugins installed by pip, as a user would, are found by the ``primaa`` command.

Each example package is built by pip (with build isolation: setuptools comes from the
package index) into a throwaway ``--target`` directory that only the child process sees
through ``PYTHONPATH``, so the shared environment never contains the broken ones.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent
QC = HERE.parents[1] / "plugins_contrib" / "primaa-qc"
SCAN = QC / "tests" / "data" / "TCGA-DU-5847-R01_s1_crop256.png"
GUIDE = HERE.parents[1] / "docs" / "plugins.md"
SVS = HERE.parent / "data" / "CMU-1-Small-Region.svs"
#: A fenced code block of the guide whose first line is ``# file: <name>``.
FILE_BLOCK = re.compile(r"^```\w*\n# file: (?P<name>\S+)\n(?P<body>.*?)^```$", re.M | re.S)


def _pip_install(sources: Sequence[Path], site: Path, scratch: Path) -> Path:
    """Install copies of ``sources``, so building leaves no egg-info or build/ in the repo."""
    copies = []
    for source in sources:
        copy = scratch / "src" / source.name
        shutil.copytree(
            source,
            copy,
            ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", "tests"),
        )
        copies.append(str(copy))
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site)]
    subprocess.run([*pip, *copies], check=True, timeout=300)
    return site


def _python(site: Path, *args: str, cwd: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    """Run ``python args`` seeing ``site``, with only the given ``PRIMAA_*`` settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRIMAA_")}
    # ``site`` first; then the caller's path, so the child runs the primaa under test.
    inherited = os.environ.get("PYTHONPATH")
    path = os.pathsep.join([str(site), inherited]) if inherited else str(site)
    env.update(settings, PYTHONPATH=path)
    return subprocess.run(
        [sys.executable, *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _primaa(site: Path, *args: str, cwd: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    return _python(site, "-m", "primaa.cli", *args, cwd=cwd, **settings)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("plugins")


@pytest.fixture(scope="module")
def site(scratch: Path) -> Path:
    """The QC plugin and the broken one, installed side by side."""
    return _pip_install([QC, HERE / "broken_plugin"], scratch / "site", scratch / "qc")


def test_installed_plugin_is_listed_and_broken_one_reported(site: Path, scratch: Path) -> None:
    result = _primaa(site, "algorithms", "--json", cwd=scratch)
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["image_qc"]["plugin"] == "qc"
    assert rows["image_qc"]["version"] == "0.2.0"
    assert rows["image_qc"]["summary"]
    assert rows["poi_detection"]["plugin"] == "builtin"
    assert "'broken'" in result.stderr
    assert "primaa_missing_dependency" in result.stderr


def test_the_target_install_is_the_one_loaded(site: Path, scratch: Path) -> None:
    """The shared environment may hold an editable primaa-qc too; the child must use ours."""
    code = "import primaa_qc.plugin as p; print(p.__file__)"
    env = {**os.environ, "PYTHONPATH": str(site)}
    found = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert Path(found.stdout.strip()).is_relative_to(site)


def test_installed_plugin_runs_from_the_command_line(site: Path, scratch: Path) -> None:
    result = _primaa(
        site, "run", "image_qc", str(SCAN), "--param", "blur_threshold=80", cwd=scratch
    )
    assert result.returncode == 0, result.stderr
    feature = json.loads(result.stdout)
    assert feature["geometry"] is None
    assert feature["properties"]["algorithm_name"] == "image_qc"
    assert feature["properties"]["measurements"]["qc_pass"] == 1.0


def test_duplicate_algorithm_name_stops_start_up_naming_both(scratch: Path) -> None:
    site = _pip_install([HERE / "duplicate_plugin"], scratch / "site-dup", scratch / "dup")
    result = _primaa(site, "algorithms", "--json", cwd=scratch)
    assert result.returncode != 0
    assert result.stdout == ""
    assert "'poi_detection'" in result.stderr
    assert "'builtin'" in result.stderr
    assert "'dup'" in result.stderr


def test_disabling_one_of_the_duplicates_lets_start_up_proceed(scratch: Path) -> None:
    site = _pip_install([HERE / "duplicate_plugin"], scratch / "site-dup2", scratch / "dup2")
    result = _primaa(site, "algorithms", "--json", cwd=scratch, PRIMAA_DISABLED_PLUGINS="dup")
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["poi_detection"]["plugin"] == "builtin"


def test_the_guide_example_plugin_installs_runs_and_passes_its_test(scratch: Path) -> None:
    """docs/plugins.md promises its example works as written: build it from the guide."""
    package = scratch / "guide" / "primaa-dark-blobs"
    package.mkdir(parents=True)
    files = {m["name"]: m["body"] for m in FILE_BLOCK.finditer(GUIDE.read_text())}
    assert set(files) == {"pyproject.toml", "primaa_dark_blobs.py", "test_dark_blobs.py"}
    for name, body in files.items():
        (package / name).write_text(body)
    site = _pip_install([package], scratch / "site-guide", scratch / "guide-build")

    listing = _primaa(site, "algorithms", "--json", cwd=scratch)
    assert listing.returncode == 0, listing.stderr
    rows = {row["name"]: row for row in json.loads(listing.stdout)}
    assert rows["dark_blobs"]["plugin"] == "dark_blobs"

    run = _primaa(site, "run", "dark_blobs", str(SCAN), "--param", "threshold=90", cwd=scratch)
    assert run.returncode == 0, run.stderr
    feature = json.loads(run.stdout)
    assert feature["geometry"]["type"] == "MultiPoint"
    count = feature["properties"]["measurements"]["blob_count"]
    assert count == len(feature["geometry"]["coordinates"]) > 0

    slide = _primaa(
        site,
        "run",
        "dark_blobs",
        str(SVS),
        "--param",
        "threshold=90",
        "--workers",
        "2",
        cwd=scratch,
        PRIMAA_SLIDE_TILE_SIZE="1024",
    )
    assert slide.returncode == 0, slide.stderr
    merged = json.loads(slide.stdout)
    assert merged["properties"]["measurements"]["tiles"] >= 4, "it declares mpp: tiled"
    xs = [x for x, _ in merged["geometry"]["coordinates"]]
    assert 2000 < max(xs) < 2220, "level-0 coordinates of the 2220 px wide slide"

    tested = _python(
        site, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(package), cwd=package
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
