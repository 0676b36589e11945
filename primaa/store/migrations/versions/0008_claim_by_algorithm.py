"""An index for claims of some algorithms only: ``jobs (status, algorithm, created_at,
job_id)``, so a dispatcher reads the oldest Pending jobs of each algorithm it claims
in order, however many Pending jobs of the others wait.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28

Add-only: replicas of the previous release run on with it (their claim does not
filter). Building it locks the jobs table against writes for as long as it takes
(about 1 s per 150,000 jobs on PostgreSQL 15 here).
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_jobs_status_algorithm_created_at",
        "jobs",
        ["status", "algorithm", "created_at", "job_id"],
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_status_algorithm_created_at", table_name="jobs")
