"""The SQL schema as SQLAlchemy Core tables, shared by SQLite and PostgreSQL.

Times are epoch seconds in double-precision columns, the model's own
representation: an exact round trip and no time-zone conversions. The jobs
columns follow the order of :class:`~primaa.jobs.model.Job`'s fields.

This module describes the current schema for queries; the migrations in
``migrations/versions`` are what create it, and must be kept in step.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("job_id", sa.String, primary_key=True),
    sa.Column("algorithm", sa.String, nullable=False),
    sa.Column("parameters", sa.JSON, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("image_url", sa.String),
    sa.Column("image_path", sa.String),
    sa.Column("callback_url", sa.String),
    sa.Column("callback_token", sa.String),
    sa.Column("client_id", sa.String),
    sa.Column("service_url", sa.String),
    sa.Column("progress_percent", sa.Double, nullable=False),
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
    # Written once the image is opened (width, height, mpp, levels, format); read as a whole.
    sa.Column("image", sa.JSON(none_as_null=True)),
    # Claim: oldest Pending first; also serves listing filtered by status.
    sa.Index("ix_jobs_status_created_at", "status", "created_at", "job_id"),
    # Unfiltered listing, newest first.
    sa.Index("ix_jobs_created_at", "created_at", "job_id"),
    sa.Index("ix_jobs_algorithm_created_at", "algorithm", "created_at", "job_id"),
    # Claim of some algorithms only: the oldest Pending jobs of each, in order.
    sa.Index("ix_jobs_status_algorithm_created_at", "status", "algorithm", "created_at", "job_id"),
    sa.Index("ix_jobs_client_id_created_at", "client_id", "created_at", "job_id"),
    # Finding expired leases among Running jobs.
    sa.Index("ix_jobs_status_lease_expires_at", "status", "lease_expires_at"),
)

#: Results live apart from jobs so that status reads never drag a large GeoJSON along.
results = sa.Table(
    "results",
    metadata,
    sa.Column(
        "job_id",
        sa.String,
        sa.ForeignKey("jobs.job_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    # JSON text: stored and served as a document, never queried inside.
    sa.Column("geojson", sa.Text, nullable=False),
)

deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("delivery_id", sa.String, primary_key=True),
    sa.Column(
        "job_id",
        sa.String,
        sa.ForeignKey("jobs.job_id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("url", sa.String, nullable=False),
    sa.Column("token", sa.String),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("next_attempt_at", sa.Double, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    # The receiver's host:port, so the outbox can cap deliveries in flight per receiver.
    sa.Column("host", sa.String, nullable=False, server_default=""),
    # The outbox process sending the delivery now, until when: one sender per attempt.
    sa.Column("claimed_by", sa.String),
    sa.Column("claim_expires_at", sa.Double),
    sa.Index("ix_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
    sa.Index("ix_deliveries_job_id_created_at", "job_id", "created_at"),
    # A claim seeks each receiver's due deliveries in order, and counts its claimed ones.
    sa.Index(
        "ix_deliveries_status_host_due",
        "status",
        "host",
        "next_attempt_at",
        "created_at",
        "delivery_id",
    ),
    sa.Index("ix_deliveries_status_host_claim", "status", "host", "claim_expires_at"),
)

#: One row per attempt: appending is an INSERT, never a read-modify-write of a list.
delivery_attempts = sa.Table(
    "delivery_attempts",
    metadata,
    sa.Column(
        "attempt_id",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column(
        "delivery_id",
        sa.String,
        sa.ForeignKey("deliveries.delivery_id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("at", sa.Double, nullable=False),
    sa.Column("status_code", sa.Integer),
    sa.Column("error", sa.Text),
    sa.Column("duration", sa.Double, nullable=False),
    sa.Index("ix_delivery_attempts_delivery_id", "delivery_id", "attempt_id"),
)
