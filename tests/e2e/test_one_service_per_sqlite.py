"""A second ``primaa serve`` on the SQLite database of a running one refuses to start,
with one line and exit status 2; once the first has stopped, it starts."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

from tests.e2e.harness import REPO, PrimaaServer, free_port

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX"),
]


async def _second_serve(server: PrimaaServer) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRIMAA_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "primaa.cli",
        "serve",
        "--port",
        str(free_port()),
        "--data-dir",
        str(server.data_dir),
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, stderr.decode()


async def test_a_second_service_on_the_same_sqlite_file_is_refused(
    primaa_server: PrimaaServer,
) -> None:
    await primaa_server.start()
    code, stderr = await _second_serve(primaa_server)
    assert code == 2, stderr
    assert "Traceback" not in stderr
    (line,) = stderr.strip().splitlines()
    assert line.startswith("primaa: another primaa service (pid ")
    assert f"pid {primaa_server.pid})" in line
    assert str(primaa_server.data_dir / "primaa.sqlite3") in line
    assert "PostgreSQL" in line

    assert await primaa_server.terminate() == 0
    # The lock went with the process: the same data directory serves again.
    await primaa_server.start()
