"""A scratch PostgreSQL database: what a fresh deployment starts on, for tests and benches
that run several services (replicas) against one database."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator


async def execute(url: str, *statements: str) -> None:
    """Run ``statements`` one by one on a connection of their own."""
    import asyncpg  # the postgres extra

    connection = await asyncpg.connect(url)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


def _names(admin_url: str, prefix: str) -> tuple[str, str]:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    return name, admin_url.rsplit("/", 1)[0] + f"/{name}"


@contextlib.asynccontextmanager
async def scratch_database(admin_url: str, prefix: str = "primaa_test") -> AsyncIterator[str]:
    """A new empty database beside ``admin_url``'s, dropped afterwards; yields its URL."""
    name, url = _names(admin_url, prefix)
    await execute(admin_url, f'CREATE DATABASE "{name}"')
    try:
        yield url
    finally:
        await execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def scratch_database_sync(admin_url: str, prefix: str = "primaa_test") -> Iterator[str]:
    """:func:`scratch_database` for a caller without an event loop."""
    name, url = _names(admin_url, prefix)
    asyncio.run(execute(admin_url, f'CREATE DATABASE "{name}"'))
    try:
        yield url
    finally:
        asyncio.run(execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
