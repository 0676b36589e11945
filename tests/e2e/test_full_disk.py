"""A full disk under a real ``primaa serve``: writes answer 507, ``/health`` says the store
is failing, and once space returns the job that ran meanwhile completes and submissions work.

The data directory is a small tmpfs mounted for the test (root only; skipped elsewhere).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

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


async def test_a_full_disk_is_507_then_everything_resumes(
    small_disk: Path, image_server: ImageServer, tmp_path: Path
) -> None:
    server = PrimaaServer(
        data_dir=small_disk / "data",
        log_dir=tmp_path,
        port=free_port(),
        extra_env={"PRIMAA_PLUGINS": "tests.support.algorithms"},
    )
    await server.start()
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
