"""The ``primaa_server`` fixture: one real service per test, killed and reaped at teardown."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.harness import PrimaaServer, eventually, free_port, live_group_members


@pytest.fixture
async def primaa_server(tmp_path: Path) -> AsyncIterator[PrimaaServer]:
    server = PrimaaServer(data_dir=tmp_path / "data", log_dir=tmp_path, port=free_port())
    try:
        yield server
    finally:
        await server.kill()
        if server.process is not None:
            pgid = server.process.pid
            await eventually(lambda: not live_group_members(pgid), "all processes gone")
