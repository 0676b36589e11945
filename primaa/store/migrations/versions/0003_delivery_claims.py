"""Deliveries claimed before they are sent, and grouped by receiver host.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28

``host`` lets the outbox cap the deliveries in flight per receiver; ``claimed_by``
and ``claim_expires_at`` make one process the sender of an attempt (several
replicas on one PostgreSQL database). Existing rows get their host computed here,
in Python, the way the store computes it (the function is copied, not imported,
so this revision stays a frozen snapshot).
"""

from __future__ import annotations

import urllib.parse

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _host(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    host = (parts.hostname or "").lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    port = port or {"http": 80, "https": 443}.get(parts.scheme.lower())
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{port}" if port else host


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("host", sa.String, nullable=False, server_default=""))
        batch.add_column(sa.Column("claimed_by", sa.String))
        batch.add_column(sa.Column("claim_expires_at", sa.Double))
    table = sa.table(
        "deliveries",
        sa.column("delivery_id", sa.String),
        sa.column("url", sa.String),
        sa.column("host", sa.String),
    )
    connection = op.get_bind()
    rows = connection.execute(sa.select(table.c.delivery_id, table.c.url)).all()
    if rows:
        connection.execute(
            table.update()
            .where(table.c.delivery_id == sa.bindparam("id"))
            .values(host=sa.bindparam("new_host")),
            [{"id": delivery_id, "new_host": _host(url)} for delivery_id, url in rows],
        )


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("claim_expires_at")
        batch.drop_column("claimed_by")
        batch.drop_column("host")
