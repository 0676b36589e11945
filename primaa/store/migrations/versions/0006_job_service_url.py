"""The address a job was submitted to: ``jobs.service_url`` (``scheme://host``), from which
the callback of a large result links to it when no ``public_url`` is configured.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28

Adding a nullable column is instant on both databases: no row is rewritten.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("service_url", sa.String))


def downgrade() -> None:
    # ALTER TABLE ... DROP COLUMN: PostgreSQL, and SQLite 3.35+ (the store needs 3.35).
    op.drop_column("jobs", "service_url")
