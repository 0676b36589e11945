"""``primaa submit | status | wait`` as a user runs them: processes, output, exit codes."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from primaa import cli
from primaa.client import Client
from primaa.config import ConfigError, load_settings
from tests.client.conftest import LiveService
from tests.e2e.harness import REPO, free_port


def primaa(
    *args: str, env: dict[str, str] | None = None, stderr: int | None = subprocess.PIPE
) -> subprocess.CompletedProcess[str]:
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("PRIMAA_")}
    child_env["PYTHONPATH"] = str(REPO)
    child_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "primaa.cli", *args],
        env=child_env,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        timeout=60,
    )


def job_of(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    job: dict[str, Any] = json.loads(result.stdout)
    return job


def test_submit_upload_and_wait(live_service: LiveService, he_png: Path) -> None:
    url = ("--url", live_service.url)
    done = primaa(
        "submit", "test_sleep", "--image", str(he_png), "--param", "seconds=0.3", "--wait", *url
    )
    assert done.returncode == 0, done.stderr
    job = job_of(done)
    assert job["status"] == "Completed"
    assert job["parameters"]["seconds"] == 0.3
    assert f"submitted job {job['job_id']}" in done.stderr
    assert f"job {job['job_id']} Completed in " in done.stderr


def test_submit_url_then_status_and_wait(live_service: LiveService, png_url: str) -> None:
    env = {"PRIMAA_CLIENT_URL": live_service.url}
    submitted = primaa("submit", "test_sleep", png_url, "--param", "seconds=0.3", env=env)
    assert submitted.returncode == 0, submitted.stderr
    job_id = job_of(submitted)["job_id"]
    assert job_of(submitted)["status"] == "Pending"
    status = primaa("status", job_id, env=env)
    assert status.returncode == 0, status.stderr
    assert job_of(status)["job_id"] == job_id
    waited = primaa("wait", job_id, "--timeout", "20", "--poll", "0.1", env=env)
    assert waited.returncode == 0, waited.stderr
    assert job_of(waited)["status"] == "Completed"


def test_failed_timed_out_and_cancelled_exit_1(live_service: LiveService, he_png: Path) -> None:
    url = ("--url", live_service.url)
    failed = primaa("submit", "test_fail", "--image", str(he_png), "--wait", "--poll", "0.1", *url)
    assert failed.returncode == 1
    assert job_of(failed)["status"] == "Failed"
    assert job_of(failed)["error"] in failed.stderr

    with Client(live_service.url) as client:
        job = client.submit("test_sleep", image=he_png, parameters={"seconds": 30, "steps": 300})
        timed_out = primaa("wait", job.job_id, "--timeout", "0.3", "--poll", "0.1", *url)
        assert timed_out.returncode == 1
        assert "still" in timed_out.stderr
        assert job_of(timed_out)["status"] in {"Pending", "Running"}
        client.cancel(job.job_id)
        client.wait(job.job_id, timeout=20, poll_interval=0.05)
    cancelled = primaa("status", job.job_id, *url)
    assert cancelled.returncode == 1
    assert job_of(cancelled)["status"] == "Cancelled"


def test_progress_is_drawn_on_a_terminal(live_service: LiveService, he_png: Path) -> None:
    controller, terminal = pty.openpty()
    try:
        done = primaa(
            "submit",
            "test_sleep",
            "--image",
            str(he_png),
            "--param",
            "seconds=0.5",
            "--wait",
            "--poll",
            "0.05",
            "--url",
            live_service.url,
            stderr=terminal,
        )
        os.close(terminal)
        terminal = -1
        drawn = b""
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # EIO: the terminal is closed and drained
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        os.close(controller)
        if terminal >= 0:
            os.close(terminal)
    assert done.returncode == 0
    text = drawn.decode()
    assert "\r" in text
    assert "[####################] 100.0 %" in text
    # The redrawn line is ended before the summary, which starts a line of its own.
    assert re.search(r"100\.0 % +\d+ s\r?\nprimaa: job \S+ Completed in ", text), text


USAGE_ERRORS = [
    (("submit", "test_sleep"), "either IMAGE_URL or --image"),
    (("submit", "test_sleep", "http://127.0.0.1/x.png", "--image", "x.png"), "either"),
    (("submit", "test_sleep", "--image", "missing.png"), "no such file"),
    (("submit", "test_sleep", "http://127.0.0.1/x.png", "--param", "seconds"), "NAME=VALUE"),
    (("status", "no-such-job"), "not_found"),
    (("submit", "no_such_algorithm", "http://127.0.0.1/x.png"), "available"),
    (("wait", "job", "--timeout", "soon"), "invalid float value"),
]


def run_in_process(args: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``primaa ARGS`` through :func:`primaa.cli.main` (exit code, stderr): the refusals
    need no process of their own, and starting one per case costs a second."""
    try:
        code = cli.main(list(args))
    except SystemExit as exc:  # argparse's usage errors
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    assert captured.out == "", args
    return code, captured.err


def test_usage_errors_exit_2(live_service: LiveService, capsys: pytest.CaptureFixture[str]) -> None:
    for args, message in USAGE_ERRORS:
        code, stderr = run_in_process((*args, "--url", live_service.url), capsys)
        assert code == 2, args
        assert message in stderr, (args, stderr)


def test_no_service_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    code, stderr = run_in_process(
        ("status", "job", "--url", f"http://127.0.0.1:{free_port()}"), capsys
    )
    assert code == 1
    assert "connection_error" in stderr


def test_the_service_ignores_client_variables() -> None:
    load_settings(env={"PRIMAA_CLIENT_URL": "http://x", "PRIMAA_CLIENT_API_KEY": "k"})
    with pytest.raises(ConfigError, match="PRIMAA_CLIENTURL"):
        load_settings(env={"PRIMAA_CLIENTURL": "http://x"})
