"""Names that say what they hold: ``owner`` is the API client (``client_id``), not the
lease holder, and ``progress`` is a percent (``progress_percent``).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28

``ALTER TABLE ... RENAME COLUMN`` works on PostgreSQL and on SQLite 3.25+ (the
store needs 3.35); SQLite carries the index along, so only its name changes.
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE jobs RENAME COLUMN owner TO client_id")
    op.execute("ALTER TABLE jobs RENAME COLUMN progress TO progress_percent")
    op.drop_index("ix_jobs_owner_created_at", table_name="jobs")
    op.create_index("ix_jobs_client_id_created_at", "jobs", ["client_id", "created_at", "job_id"])


def downgrade() -> None:
    op.drop_index("ix_jobs_client_id_created_at", table_name="jobs")
    op.execute("ALTER TABLE jobs RENAME COLUMN progress_percent TO progress")
    op.execute("ALTER TABLE jobs RENAME COLUMN client_id TO owner")
    op.create_index("ix_jobs_owner_created_at", "jobs", ["owner", "created_at", "job_id"])
