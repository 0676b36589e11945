"""Jobs, results, callback deliveries and their attempts.

Revision ID: 0001
Revises:
Create Date: 2026-11-26

Written by hand so it stays a frozen snapshot: it does not import
``primaa.store.tables``, which describes whatever the schema is today.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("job_id", sa.String, nullable=False),
        sa.Column("algorithm", sa.String, nullable=False),
        sa.Column("parameters", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("image_url", sa.String),
        sa.Column("image_path", sa.String),
        sa.Column("callback_url", sa.String),
        sa.Column("callback_token", sa.String),
        sa.Column("owner", sa.String),
        sa.Column("progress", sa.Double, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
        sa.Column("started_at", sa.Double),
        sa.Column("finished_at", sa.Double),
        sa.Column("timeout", sa.Double),
        sa.Column("lease_owner", sa.String),
        sa.Column("lease_expires_at", sa.Double),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
        sa.PrimaryKeyConstraint("job_id", name="pk_jobs"),
    )
    op.create_index("ix_jobs_status_created_at", "jobs", ["status", "created_at", "job_id"])
    op.create_index("ix_jobs_created_at", "jobs", ["created_at", "job_id"])
    op.create_index("ix_jobs_algorithm_created_at", "jobs", ["algorithm", "created_at", "job_id"])
    op.create_index("ix_jobs_owner_created_at", "jobs", ["owner", "created_at", "job_id"])
    op.create_index("ix_jobs_status_lease_expires_at", "jobs", ["status", "lease_expires_at"])

    op.create_table(
        "results",
        sa.Column("job_id", sa.String, nullable=False),
        sa.Column("geojson", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("job_id", name="pk_results"),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.job_id"], name="fk_results_job_id_jobs", ondelete="CASCADE"
        ),
    )

    op.create_table(
        "deliveries",
        sa.Column("delivery_id", sa.String, nullable=False),
        sa.Column("job_id", sa.String, nullable=False),
        sa.Column("url", sa.String, nullable=False),
        sa.Column("token", sa.String),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("next_attempt_at", sa.Double, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("delivery_id", name="pk_deliveries"),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.job_id"], name="fk_deliveries_job_id_jobs", ondelete="CASCADE"
        ),
    )
    op.create_index(
        "ix_deliveries_status_next_attempt_at", "deliveries", ["status", "next_attempt_at"]
    )
    op.create_index("ix_deliveries_job_id_created_at", "deliveries", ["job_id", "created_at"])

    op.create_table(
        "delivery_attempts",
        sa.Column(
            "attempt_id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            nullable=False,
            autoincrement=True,
        ),
        sa.Column("delivery_id", sa.String, nullable=False),
        sa.Column("at", sa.Double, nullable=False),
        sa.Column("status_code", sa.Integer),
        sa.Column("error", sa.Text),
        sa.Column("duration", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("attempt_id", name="pk_delivery_attempts"),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["deliveries.delivery_id"],
            name="fk_delivery_attempts_delivery_id_deliveries",
            ondelete="CASCADE",
        ),
    )
    op.create_index(
        "ix_delivery_attempts_delivery_id", "delivery_attempts", ["delivery_id", "attempt_id"]
    )


def downgrade() -> None:
    op.drop_table("delivery_attempts")
    op.drop_table("deliveries")
    op.drop_table("results")
    op.drop_table("jobs")
