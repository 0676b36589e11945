"""The ``primaa`` command as a user runs it: a real process, its output and its exit code."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import CallbackReceiver, ImageServer, synthetic_he_png
from tests.support.env import child_env

NUCLEI_DATA = Path(__file__).parent / "data" / "nuclei"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff"}


def primaa(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m primaa.cli ARGS`` with no ``PRIMAA_*`` from the caller's environment."""
    return subprocess.run(
        [sys.executable, "-m", "primaa.cli", *args],
        cwd=cwd,
        env=child_env(env),
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


API_KEY = "cli-key-6d2f8a0b4c1e9d7f3a5b"
CALLBACK_TOKEN = "cli-token-0e9b7c5a3d1f2e4c6a8b"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def _serving(
    tmp_path: Path, *args: str, env: dict[str, str]
) -> AsyncIterator[tuple[str, Path]]:
    """``primaa serve`` in its own process group, JSON logs to a file; (base URL, log path)."""
    port = _free_port()
    log_path = tmp_path / f"serve-{port}.log"
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("PRIMAA_")}
    child_env.update({"PRIMAA_LOG_FORMAT": "json", **env})
    command = [sys.executable, "-m", "primaa.cli", "serve", "--port", str(port)]
    command += ["--data-dir", str(tmp_path / "data"), "--workers", "1", *args]
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            *command,
            cwd=tmp_path,
            env=child_env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            for _ in range(600):
                assert process.returncode is None, log_path.read_text()
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(f"{base}/health") as response:
                        if response.status == 200:
                            break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError(f"primaa serve never answered:\n{log_path.read_text()}")
        yield base, log_path
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "example.org"])
def test_serve_without_keys_refuses_a_non_loopback_host(tmp_path: Path, host: str) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "primaa.cli", "serve", "--host", host, "--port", str(_free_port())],
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if not k.startswith("PRIMAA_")},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, stderr = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        pytest.fail(f"primaa serve --host {host} started without keys")
    assert process.returncode == 2, stderr
    assert repr(host) in stderr
    assert "PRIMAA_API_KEYS" in stderr
    assert "PRIMAA_ALLOW_OPEN=true" in stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize(
    "env",
    [{"PRIMAA_API_KEYS": API_KEY}, {"PRIMAA_ALLOW_OPEN": "true"}],
    ids=["with-keys", "allow-open"],
)
async def test_serve_on_all_addresses_with_keys_or_allow_open(
    tmp_path: Path, env: dict[str, str]
) -> None:
    async with (
        _serving(tmp_path, "--host", "0.0.0.0", env=env) as (base, _),
        aiohttp.ClientSession() as session,
        session.get(f"{base}/jobs") as response,
    ):
        assert response.status == (401 if "PRIMAA_API_KEYS" in env else 200)


def test_hash_key_prints_the_sha256_form(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "primaa.cli", "hash-key"],
        cwd=tmp_path,
        input=f"{API_KEY}\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"sha256:{hashlib.sha256(API_KEY.encode()).hexdigest()}\n"
    assert API_KEY not in result.stdout + result.stderr

    empty = subprocess.run(
        [sys.executable, "-m", "primaa.cli", "hash-key"],
        cwd=tmp_path,
        input="\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert empty.returncode == 2
    assert empty.stdout == ""


async def test_serve_accepts_the_hashed_key_and_logs_no_key_or_token(
    tmp_path: Path, image_server: ImageServer, callback_receiver: CallbackReceiver
) -> None:
    """A real service with the key configured as its hash: the key works, and neither it
    nor a callback token shows up in any response or in the service's JSON log."""
    hashed = f"sha256:{hashlib.sha256(API_KEY.encode()).hexdigest()}"
    env = {"PRIMAA_API_KEYS": hashed, "PRIMAA_ALLOW_PRIVATE_URLS": "true"}
    seen: list[str] = []
    async with (
        _serving(tmp_path, env=env) as (base, log_path),
        aiohttp.ClientSession(base, timeout=aiohttp.ClientTimeout(total=10)) as http,
    ):

        async def call(method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
            async with http.request(method, path, **kwargs) as response:
                text = await response.text()
                seen.append(f"{response.status} {dict(response.headers)} {text}")
                return response.status, json.loads(text)

        keyed = {"Authorization": f"Bearer {API_KEY}"}
        submission = {
            "image_url": image_server.url("/tile.png"),
            "algorithm_name": "poi_detection",
            "callback_url": callback_receiver.url,
            "callback_token": CALLBACK_TOKEN,
        }
        status, job = await call("POST", "/jobs", json=submission, headers=keyed)
        assert status == 202, job
        for _ in range(600):
            _, job = await call("GET", f"/jobs/{job['job_id']}", headers={"X-API-Key": API_KEY})
            if (job.get("callback") or {}).get("state") == "Delivered":
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"callback never delivered: {job}")
        assert (await call("GET", f"/jobs/{job['job_id']}/result", headers=keyed))[0] == 200
        assert (await call("GET", "/jobs", headers={"X-API-Key": API_KEY + "0"}))[0] == 401
        assert (await call("GET", "/jobs", headers={"X-API-Key": hashed}))[0] == 401
        invalid = {**submission, "image_url": "not a url"}
        assert (await call("POST", "/jobs", json=invalid, headers=keyed))[0] == 422
        legacy = {**submission, "callback_token": [CALLBACK_TOKEN]}
        assert (await call("POST", "/job-submission", json=legacy, headers=keyed))[0] == 422
        await asyncio.sleep(0.5)
        log = log_path.read_text()

    assert callback_receiver.received[0].headers["Authorization"] == f"Bearer {CALLBACK_TOKEN}"
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert {"request", "job_submitted", "webhook_attempt"} <= {line["event"] for line in lines}
    for secret in (API_KEY, CALLBACK_TOKEN):
        assert secret not in log
        for answer in seen:
            assert secret not in answer, answer
