"""The README's Python client example runs as written against a fresh ``primaa serve``
(only its URL is the test service's port)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.client.conftest import LiveService, running_service
from tests.conftest import synthetic_he_png
from tests.e2e.harness import REPO

README_URL = "http://127.0.0.1:8000"


def readme_example() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme.split("\n## Python client\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None, "no Python example in the README's Python client section"
    return match.group(1)


@pytest.fixture(scope="module")
def fresh_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    """``primaa serve`` with its defaults: no settings in the environment at all."""
    with running_service(tmp_path_factory.mktemp("fresh") / "data", {}) as service:
        yield service


def test_readme_example_runs(fresh_service: LiveService, tmp_path: Path) -> None:
    example = readme_example()
    assert README_URL in example
    assert len(example.strip().splitlines()) <= 11
    (tmp_path / "slide.png").write_bytes(synthetic_he_png())
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRIMAA_")}
    env["PYTHONPATH"] = str(REPO)
    result = subprocess.run(
        [sys.executable, "-c", example.replace(README_URL, fresh_service.url)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[-2] == "Completed 100 %"
    count = re.fullmatch(r"(\d+) nuclei", lines[-1])
    assert count is not None, result.stdout
    assert int(count.group(1)) > 0
