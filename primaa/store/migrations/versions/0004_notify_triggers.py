"""PostgreSQL tells every replica when there is work: NOTIFY on new or returned jobs
and deliveries.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28

Triggers, not statements in the store: every writer (a replica, a migration, an
operator's SQL) wakes the replicas, at commit, without a round trip more. The
payload is the schema, so replicas of other schemas on the same database (tests,
several installations) skip what is not theirs. SQLite has no other process to wake.
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_FUNCTIONS = {
    "primaa_notify_jobs": "primaa_jobs",
    "primaa_notify_deliveries": "primaa_deliveries",
}


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for function, channel in _FUNCTIONS.items():
        op.execute(
            f"CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$"
            f" BEGIN PERFORM pg_notify('{channel}', current_schema()); RETURN NULL; END $$"
        )
    # A new job, or one back to Pending (lease expired, handed back on a stop).
    op.execute(
        "CREATE TRIGGER primaa_jobs_inserted AFTER INSERT ON jobs"
        " FOR EACH STATEMENT EXECUTE FUNCTION primaa_notify_jobs()"
    )
    op.execute(
        "CREATE TRIGGER primaa_jobs_pending AFTER UPDATE OF status ON jobs FOR EACH ROW"
        " WHEN (NEW.status = 'Pending' AND OLD.status <> 'Pending')"
        " EXECUTE FUNCTION primaa_notify_jobs()"
    )
    # A new delivery, or a claim given back unsent while the delivery is due.
    op.execute(
        "CREATE TRIGGER primaa_deliveries_inserted AFTER INSERT ON deliveries"
        " FOR EACH STATEMENT EXECUTE FUNCTION primaa_notify_deliveries()"
    )
    op.execute(
        "CREATE TRIGGER primaa_deliveries_released AFTER UPDATE OF claimed_by ON deliveries"
        " FOR EACH ROW WHEN (NEW.claimed_by IS NULL AND OLD.claimed_by IS NOT NULL"
        " AND NEW.status = 'Pending'"
        " AND NEW.next_attempt_at <= extract(epoch FROM clock_timestamp()))"
        " EXECUTE FUNCTION primaa_notify_deliveries()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS primaa_deliveries_released ON deliveries")
    op.execute("DROP TRIGGER IF EXISTS primaa_deliveries_inserted ON deliveries")
    op.execute("DROP TRIGGER IF EXISTS primaa_jobs_pending ON jobs")
    op.execute("DROP TRIGGER IF EXISTS primaa_jobs_inserted ON jobs")
    for function in _FUNCTIONS:
        op.execute(f"DROP FUNCTION IF EXISTS {function}()")
