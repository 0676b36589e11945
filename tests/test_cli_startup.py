"""First run and start-up failures as a user meets them: one line, exit status 2, no traceback."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import pytest

from primaa import __version__
from tests.test_cli import primaa


def _refused(result_stderr: str) -> str:
    """The one line a failed start prints."""
    assert "Traceback" not in result_stderr
    lines = result_stderr.strip().splitlines()
    assert len(lines) == 1, result_stderr
    assert lines[0].startswith("primaa: ")
    return lines[0]


def test_version(tmp_path: Path) -> None:
    result = primaa("--version", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.strip() == f"primaa {__version__}"


def test_algorithm_detail_shows_its_description_and_parameters(tmp_path: Path) -> None:
    result = primaa("algorithms", "poi_detection", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    first, *rest = result.stdout.splitlines()
    assert first.startswith("poi_detection ")
    assert "[builtin]" in first
    assert "parameters:" in rest
    assert any(line.startswith("  sensitivity (number, 0.0 to 1.0, default 0.5)") for line in rest)


def test_algorithm_detail_as_json_is_the_api_description(tmp_path: Path) -> None:
    result = primaa("algorithms", "roi_detection", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    detail = json.loads(result.stdout)
    assert detail["name"] == "roi_detection"
    assert detail["parameters"]["type"] == "object"


def test_unknown_algorithm_detail_exits_2(tmp_path: Path) -> None:
    result = primaa("algorithms", "nope", cwd=tmp_path)
    assert result.returncode == 2
    assert "poi_detection" in _refused(result.stderr)


def test_port_in_use(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = primaa("serve", "--port", str(port), "--data-dir", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 2
    line = _refused(result.stderr)
    assert f"127.0.0.1:{port}" in line
    assert "PRIMAA_PORT" in line


def test_data_dir_that_cannot_be_written(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = primaa("serve", "--data-dir", str(blocker / "data"), cwd=tmp_path)
    assert result.returncode == 2
    line = _refused(result.stderr)
    assert str(blocker / "data") in line
    assert "PRIMAA_DATA_DIR" in line


def test_unknown_database_url_scheme(tmp_path: Path) -> None:
    env = {"PRIMAA_DATABASE_URL": "mysql://db/primaa"}
    result = primaa("serve", "--data-dir", str(tmp_path), cwd=tmp_path, env=env)
    assert result.returncode == 2
    line = _refused(result.stderr)
    assert "mysql" in line
    assert "PRIMAA_DATABASE_URL" in line


def test_postgresql_without_its_driver(tmp_path: Path) -> None:
    """As if installed without the ``postgres`` extra: asyncpg cannot be imported."""
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "sitecustomize.py").write_text(
        "import importlib.util, sys\n"
        "real = importlib.util.find_spec\n"
        "def find_spec(name, *args):\n"
        "    return None if name == 'asyncpg' else real(name, *args)\n"
        "importlib.util.find_spec = find_spec\n"
    )
    env = {
        "PRIMAA_DATABASE_URL": "postgresql://postgres@127.0.0.1/test",
        "PYTHONPATH": f"{shadow}:{':'.join(sys.path)}",
    }
    result = primaa("serve", "--data-dir", str(tmp_path), cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert "pip install 'primaa[postgres]'" in _refused(result.stderr)


def test_dask_executor_without_its_extra(tmp_path: Path) -> None:
    """As if installed without the ``dask`` extra: distributed cannot be imported."""
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "sitecustomize.py").write_text(
        "import importlib.util, sys\n"
        "real = importlib.util.find_spec\n"
        "def find_spec(name, *args):\n"
        "    return None if name == 'distributed' else real(name, *args)\n"
        "importlib.util.find_spec = find_spec\n"
    )
    env = {
        "PRIMAA_EXECUTOR": "dask",
        "PRIMAA_DASK_SCHEDULER": "tcp://127.0.0.1:8786",
        "PYTHONPATH": f"{shadow}:{':'.join(sys.path)}",
    }
    result = primaa("serve", "--data-dir", str(tmp_path), cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert "pip install 'primaa[dask]'" in _refused(result.stderr)


def test_dask_executor_without_a_scheduler(tmp_path: Path) -> None:
    pytest.importorskip("distributed", reason="the Dask executor needs primaa[dask] (distributed)")
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]  # free once closed: nothing listens there
    env = {"PRIMAA_EXECUTOR": "dask", "PRIMAA_DASK_SCHEDULER": f"tcp://127.0.0.1:{port}"}
    result = primaa("serve", "--data-dir", str(tmp_path), cwd=tmp_path, env=env)
    assert result.returncode == 2
    line = _refused(result.stderr)
    assert line.startswith(f"primaa: cannot reach the Dask scheduler at 'tcp://127.0.0.1:{port}'")
    assert "dask_scheduler" in line


def test_dask_executor_needs_a_scheduler_address(tmp_path: Path) -> None:
    env = {"PRIMAA_EXECUTOR": "dask"}
    result = primaa("serve", "--data-dir", str(tmp_path), cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert _refused(result.stderr).startswith("primaa: dask_scheduler: must be the scheduler's")


@pytest.mark.parametrize(
    ("name", "suggestion"), [("PRIMAA_WORKER", "PRIMAA_WORKERS"), ("PRIMAA_PROT", "PRIMAA_PORT")]
)
def test_misspelt_environment_variable(tmp_path: Path, name: str, suggestion: str) -> None:
    result = primaa("serve", "--data-dir", str(tmp_path), cwd=tmp_path, env={name: "3"})
    assert result.returncode == 2
    line = _refused(result.stderr)
    assert name in line
    assert f"did you mean {suggestion}?" in line
