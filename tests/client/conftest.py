"""The client against real services: the app on a loopback port in the test's loop (for
:class:`AsyncClient`), and ``primaa serve`` as a process (for the sync client, the CLI
and the README example, which block a thread of their own)."""

from __future__ import annotations

import contextlib
import dataclasses
import http.server
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from primaa.app import create_app
from primaa.client import AsyncClient
from tests.conftest import make_settings, synthetic_he_png
from tests.e2e.harness import REPO, TEST_PLUGINS, free_port

SECRET = "whsec_" + "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seS0xMjM0NTY="


@pytest.fixture
async def app_server(aiohttp_server: Callable[..., Any], tmp_path: Path) -> TestServer:
    """The real app, with the test algorithms and a webhook secret."""
    server: TestServer = await aiohttp_server(
        create_app(make_settings(tmp_path / "data", webhook_secret=SECRET))
    )
    return server


@pytest.fixture
async def api(app_server: TestServer) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(str(app_server.make_url(""))) as client:
        yield client


@dataclasses.dataclass
class LiveService:
    url: str
    log: Path


@contextlib.contextmanager
def running_service(data_dir: Path, env: dict[str, str]) -> Iterator[LiveService]:
    """``python -m primaa.cli serve`` on a free port until the block ends (SIGTERM, then
    SIGKILL of its whole process group if it lingers)."""
    port = free_port()
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("PRIMAA_")}
    child_env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPO), child_env.get("PYTHONPATH")])
    )
    child_env.update(env)
    log = data_dir.parent / f"serve-{port}.log"
    command = [sys.executable, "-m", "primaa.cli", "serve", "--port", str(port)]
    command += ["--data-dir", str(data_dir), "--workers", "1"]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            cwd=REPO,
            env=child_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    service = LiveService(f"http://127.0.0.1:{port}", log)
    try:
        _wait_healthy(service, process)
        yield service
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(15)


def _wait_healthy(service: LiveService, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            pytest.fail(
                f"primaa serve exited with {process.returncode}:\n{service.log.read_text()}"
            )
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{service.url}/health", timeout=2) as response,
        ):
            if response.status == 200:
                return
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"primaa serve did not start:\n{service.log.read_text()}")
        time.sleep(0.05)


@pytest.fixture(scope="session")
def live_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    """One service process for the sync client and CLI tests, with the test algorithms."""
    data_dir = tmp_path_factory.mktemp("service") / "data"
    env = {"PRIMAA_ALLOW_PRIVATE_URLS": "true", "PRIMAA_PLUGINS": TEST_PLUGINS}
    with running_service(data_dir, env) as service:
        yield service


@pytest.fixture(scope="session")
def png_url() -> Iterator[str]:
    """An H&E PNG served over HTTP from a thread, for services in other processes."""
    png = synthetic_he_png()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(png)))
            self.end_headers()
            self.wfile.write(png)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/tile.png"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def he_png(tmp_path: Path) -> Path:
    path = tmp_path / "slide.png"
    path.write_bytes(synthetic_he_png())
    return path
