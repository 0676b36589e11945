"""What a job's image is: ``jobs.image``, a JSON object (width, height, mpp, levels,
format) written when a run first opens the image; NULL before.

Revision ID: 0004
Revises: 0002
Create Date: 2026-11-28

Revises 0002 on its branch; the chain is put in order (0002 → 0003 → 0004) when the
branches meet. Adding a nullable column is instant on both databases: no row is rewritten.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("image", sa.JSON(none_as_null=True)))


def downgrade() -> None:
    # ALTER TABLE ... DROP COLUMN: PostgreSQL, and SQLite 3.35+ (the store needs 3.35).
    op.drop_column("jobs", "image")
