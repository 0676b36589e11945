"""A full disk under a real ``primaa serve``: writes answer 507, ``/health`` says the store
is failing, and once space returns the job that ran meanwhile completes and submissions work.

The data directory is a small tmpfs mounted for the test (root only; skipped elsewhere).
"""

from __future__ import annotations

import asyncio
import io
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from PIL import Image

from tests.conftest import ImageServer
from tests.e2e.harness import PrimaaServer, client, free_port, get_json, wait_job

pytestmark = pytest.mark.slow

DISK_MB = 48


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(disk: Path) -> Path:
    """Write a file until the disk is full; the file to delete to free it."""
    filler = disk / "filler"
    written = subprocess.run(
        ["dd", "if=/dev/zero", f"of={filler}", "bs=4k"], capture_output=True, text=True
    )
    assert "No space left on device" in written.stderr, written.stderr
    assert shutil.disk_usage(disk).free < 8192
    return filler


async def started(data_dir: Path, log_dir: Path) -> PrimaaServer:
    """``primaa serve`` on ``data_dir`` with the test algorithms, answering."""
    server = PrimaaServer(
        data_dir=data_dir,
        log_dir=log_dir,
        port=free_port(),
        extra_env={"PRIMAA_PLUGINS": "tests.support.algorithms"},
    )
    await server.start()
    return server


async def test_a_full_disk_is_507_then_everything_resumes(
    small_disk: Path, image_server: ImageServer, tmp_path: Path
) -> None:
    server = await started(small_disk / "data", tmp_path)
    try:
        async with client(server) as http:
            submission = {
                "image_url": image_server.url("/tile.png"),
                "algorithm_name": "test_sleep",
                "parameters": {"seconds": 3.0, "steps": 30},
            }
            async with http.post("/jobs", json=submission) as response:
                assert response.status == 202
                running = (await response.json())["job_id"]
            await wait_job(http, running, lambda j: j["progress_percent"] > 0, "running")

            filler = fill(small_disk)
            refused = None
            quick = submission | {"parameters": {"seconds": 0.0, "steps": 1}}
            for _ in range(3000):  # until the database must grow
                async with http.post("/jobs", json=quick) as response:
                    if response.status != 202:
                        refused = response.status, await response.json(), response.headers
                        break
            assert refused is not None, "the store kept accepting jobs on a full disk"
            status, body, headers = refused
            assert status == 507, body
            assert body["type"] == "insufficient_storage"
            assert "disk is full" in body["error"]
            assert int(headers["Retry-After"]) > 0
            form = aiohttp.FormData()
            form.add_field("algorithm_name", "test_sleep")
            form.add_field("image", b"\x89PNG" + b"\0" * 65536, filename="tile.png")
            async with http.post("/jobs", data=form) as response:
                upload = await response.json()
                assert response.status == 507, upload
            assert upload["error"].startswith("the upload spool cannot write:"), upload
            health = await get_json(http, "/health", status=503)
            assert "disk is full" in health["store"]

            filler.unlink()

            for _ in range(200):
                async with http.get("/health") as response:
                    if response.status == 200:
                        break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("/health did not recover once space returned")
            done = await wait_job(
                http, running, lambda j: j["status"] != "Running", "final", within=20
            )
            assert done["status"] == "Completed", done
            async with http.post("/jobs", json=quick) as response:
                assert response.status == 202
    except aiohttp.ClientError:
        raise AssertionError(server.log_text()) from None
    finally:
        await server.kill()


async def test_an_image_that_cannot_be_spooled_is_fetched_again_once_space_returns(
    small_disk: Path, aiohttp_server: Callable[..., Any], tmp_path: Path
) -> None:
    """Only the spool is full (the database has room): the job waits, Running, and
    completes when space returns, instead of failing for a reason not its own."""
    noise = np.random.default_rng(7).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="PNG")

    async def png(_: web.Request) -> web.Response:
        return web.Response(body=buffer.getvalue(), content_type="image/png")

    app = web.Application()
    app.router.add_get("/noise.png", png)
    images: TestServer = await aiohttp_server(app)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "spool").symlink_to(small_disk, target_is_directory=True)
    server = await started(data_dir, tmp_path)
    try:
        async with client(server) as http:
            filler = fill(small_disk)
            submission = {
                "image_url": str(images.make_url("/noise.png")),
                "algorithm_name": "test_sleep",
                "parameters": {"seconds": 0.0, "steps": 1},
            }
            async with http.post("/jobs", json=submission) as response:
                assert response.status == 202, await response.text()
                job_id = (await response.json())["job_id"]
            for _ in range(100):
                if server.log_text().count('"job_image_deferred"') >= 2:
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the fetch was not tried again:\n" + server.log_text())
            assert (await get_json(http, f"/jobs/{job_id}"))["status"] == "Running"

            filler.unlink()
            done = await wait_job(
                http, job_id, lambda j: j["status"] != "Running", "final", within=30
            )
            assert done["status"] == "Completed", done
    except aiohttp.ClientError:
        raise AssertionError(server.log_text()) from None
    finally:
        await server.kill()
