"""Alembic environment: primaa runs migrations itself, on a connection it lends.

:func:`primaa.store.sql_engine.upgrade_schema` puts its connection in
``config.attributes["connection"]``; there is no ``alembic.ini`` and no offline mode.
SQLite needs batch mode to alter tables, PostgreSQL does not mind it.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from primaa.store.tables import metadata

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError(
        "primaa migrations run from SqlStore.open(), which passes a connection "
        'in config.attributes["connection"]'
    )

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
