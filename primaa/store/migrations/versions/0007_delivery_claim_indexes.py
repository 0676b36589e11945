"""Indexes that let a delivery claim seek, not scan: per receiver host, its due deliveries
in order and its claimed ones.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28

Without them a claim ranked every due delivery, so with a backlog behind one slow
receiver each claim cost time in proportion to the backlog (2.6 ms for 500 on SQLite).
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_deliveries_status_host_due",
        "deliveries",
        ["status", "host", "next_attempt_at", "created_at", "delivery_id"],
    )
    op.create_index(
        "ix_deliveries_status_host_claim", "deliveries", ["status", "host", "claim_expires_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_status_host_claim", "deliveries")
    op.drop_index("ix_deliveries_status_host_due", "deliveries")
