"""Upgrading a database written by an earlier version keeps its jobs, under the new names."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

import primaa.store
from primaa.store.factory import open_store_from_url

MIGRATIONS = Path(primaa.store.__file__).with_name("migrations")


def _upgrade(engine: sa.Engine, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


async def test_owner_and_progress_of_a_0001_database_become_client_id_and_percent(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    engine = sa.create_engine(url)
    _upgrade(engine, "0001")
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO jobs (job_id, algorithm, parameters, status, owner, progress,"
                " attempts, created_at, updated_at, cancel_requested)"
                " VALUES ('j1', 'nuclei', '{}', 'Running', 'key-hash', 42.5, 1, 1.0, 1.0, 0)"
            )
        )
    engine.dispose()

    store = open_store_from_url(url)
    await store.open()
    try:
        job = await store.get("j1")
        assert job is not None
        assert (job.client_id, job.progress_percent) == ("key-hash", 42.5)
        page = await store.list(client_id="key-hash")
        assert [j.job_id for j in page.jobs] == ["j1"]
    finally:
        await store.close()


async def test_a_0002_database_gains_an_empty_image_column(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    engine = sa.create_engine(url)
    _upgrade(engine, "0002")
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO jobs (job_id, algorithm, parameters, status, progress_percent,"
                " attempts, created_at, updated_at, cancel_requested)"
                " VALUES ('j1', 'nuclei', '{}', 'Running', 0, 1, 1.0, 1.0, 0)"
            )
        )
    engine.dispose()

    store = open_store_from_url(url)
    await store.open()
    try:
        job = await store.get("j1")
        assert job is not None
        assert job.image is None
        await store.set_image("j1", {"format": "png", "width": 3, "height": 2, "mpp": None})
        job = await store.get("j1")
        assert job is not None
        assert job.image == {"format": "png", "width": 3, "height": 2, "mpp": None}
    finally:
        await store.close()
