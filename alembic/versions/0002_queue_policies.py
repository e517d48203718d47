"""queue policies, circuit state, rate-limit windows, queue events

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

CIRCUIT_STATES = "('closed', 'open', 'half_open')"


def upgrade(schema: str) -> None:
    # One row per queue that has a policy. Workers write the policy of the queues in their
    # config; every claim reads these rows, so caps, rates, the circuit and the paused flag are
    # the same for every worker on every host. A queue without a row has no policy.
    op.create_table(
        "queues",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("concurrency", sa.Integer, nullable=True),
        sa.Column("rate_limit", sa.Integer, nullable=True),
        sa.Column("rate_per_s", sa.Float, nullable=True),
        sa.Column("circuit_failures", sa.Integer, nullable=True),
        sa.Column("circuit_window_s", sa.Float, nullable=True),
        sa.Column("circuit_cooldown_s", sa.Float, nullable=True),
        sa.Column("circuit_probes", sa.Integer, nullable=True),
        sa.Column("circuit_on", postgresql.ARRAY(sa.Text), nullable=True),
        sa.Column("max_attempts", sa.Integer, nullable=True),
        sa.Column("backoff_base_s", sa.Float, nullable=True),
        sa.Column("backoff_cap_s", sa.Float, nullable=True),
        sa.Column("timeout_s", sa.Float, nullable=True),
        sa.Column("retention_completed_s", sa.Float, nullable=True),
        sa.Column("retention_dead_s", sa.Float, nullable=True),
        sa.Column("paused", sa.Boolean, nullable=False, server_default=sa.false()),
        # Bumped by every claim that guards the queue: a claim whose snapshot missed another
        # claim's bump (it committed meanwhile) takes nothing from the queue that time.
        sa.Column("claims", sa.BigInteger, nullable=False, server_default="0"),
        # The circuit, shared through the database. `circuit_recent` holds the times of the
        # latest counted failures (at most circuit_failures of them, within the window).
        sa.Column("circuit_state", sa.Text, nullable=False, server_default="closed"),
        sa.Column(
            "circuit_since",
            sa.TIMESTAMP(timezone=True),
            nullable=False,
            server_default=sa.func.now(),
        ),
        sa.Column("circuit_reason", sa.Text, nullable=True),
        sa.Column(
            "circuit_recent",
            postgresql.ARRAY(sa.TIMESTAMP(timezone=True)),
            nullable=False,
            server_default="{}",
        ),
        sa.Column(
            "updated_at", sa.TIMESTAMP(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("updated_by", sa.Text, nullable=True),
        sa.CheckConstraint(f"circuit_state in {CIRCUIT_STATES}", name="queues_circuit_check"),
        sa.CheckConstraint("concurrency is null or concurrency > 0", name="queues_cap_check"),
        sa.CheckConstraint(
            "rate_limit is null or (rate_limit > 0 and rate_per_s > 0)", name="queues_rate_check"
        ),
        schema=schema,
    )
    # Job starts of rate-limited queues, counted per time bucket (a twentieth of the period):
    # a claim adds up the buckets that overlap the last period and records its own starts.
    op.create_table(
        "queue_starts",
        sa.Column("queue", sa.Text, primary_key=True),
        sa.Column("bucket_at", sa.TIMESTAMP(timezone=True), primary_key=True),
        sa.Column("starts", sa.Integer, nullable=False),
        schema=schema,
    )
    # Circuit transitions, pause and resume, and policy changes: what `pgq queues` shows.
    op.create_table(
        "queue_events",
        sa.Column("queue", sa.Text, primary_key=True),
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("from_state", sa.Text, nullable=True),
        sa.Column("to_state", sa.Text, nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("worker_id", sa.Text, nullable=True),
        sa.Column("at", sa.TIMESTAMP(timezone=True), nullable=False, server_default=sa.func.now()),
        schema=schema,
    )
    # A worker that refused part of a reloaded config says so here, for `pgq queues`.
    op.add_column("workers", sa.Column("restart_required", sa.Text, nullable=True), schema=schema)
    # Serves the running count of a capped queue in `claim`, and `reap_expired`, which reads
    # every leased row (a few per worker slot) and sorts the expired ones: it replaces
    # jobs_lease_idx, so a claim still writes one lease index entry per job. The predicate is
    # the lease, not `state = 'running'` (the same rows), so the fenced writes can never be
    # planned over it.
    op.drop_index("jobs_lease_idx", table_name="jobs", schema=schema)
    op.create_index(
        "jobs_leased_queue_idx",
        "jobs",
        ["queue"],
        schema=schema,
        postgresql_where=sa.text("lease_expires_at is not null"),
    )
    # Serves `prune_finished`: each queue's finished jobs, oldest first, per final state.
    op.create_index(
        "jobs_finished_idx",
        "jobs",
        ["queue", "state", "finished_at"],
        schema=schema,
        postgresql_where=sa.text("finished_at is not null"),
    )


def downgrade(schema: str) -> None:
    op.drop_index("jobs_finished_idx", table_name="jobs", schema=schema)
    op.drop_index("jobs_leased_queue_idx", table_name="jobs", schema=schema)
    op.create_index(
        "jobs_lease_idx",
        "jobs",
        ["lease_expires_at"],
        schema=schema,
        postgresql_where=sa.text("lease_expires_at is not null"),
    )
    op.drop_column("workers", "restart_required", schema=schema)
    op.drop_table("queue_events", schema=schema)
    op.drop_table("queue_starts", schema=schema)
    op.drop_table("queues", schema=schema)
