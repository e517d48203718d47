"""jobs, job events and workers

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

STATES = "('queued', 'running', 'retrying', 'completed', 'dead', 'cancelled')"


def upgrade(schema: str) -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("queue", sa.Text, nullable=False),
        sa.Column("task", sa.Text, nullable=False),
        sa.Column("args", postgresql.JSONB, nullable=False, server_default="{}"),
        sa.Column("state", sa.Text, nullable=False, server_default="queued"),
        sa.Column("priority", sa.Integer, nullable=False, server_default="0"),
        sa.Column("attempt", sa.Integer, nullable=False, server_default="0"),
        sa.Column("max_attempts", sa.Integer, nullable=True),
        sa.Column(
            "run_at", sa.TIMESTAMP(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "created_at", sa.TIMESTAMP(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("finished_at", sa.TIMESTAMP(timezone=True), nullable=True),
        sa.Column("worker_id", sa.Text, nullable=True),
        sa.Column("lease_expires_at", sa.TIMESTAMP(timezone=True), nullable=True),
        sa.Column("idempotency_key", sa.Text, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.CheckConstraint(f"state in {STATES}", name="jobs_state_check"),
        sa.CheckConstraint("char_length(queue) between 1 and 63", name="jobs_queue_check"),
        sa.CheckConstraint(
            "max_attempts is null or max_attempts >= 1", name="jobs_max_attempts_check"
        ),
        schema=schema,
    )
    # Serves `claim` (one queue per lateral probe, in claim order) and `runnable_queues`
    # (loose index scan over queue), only over runnable rows.
    op.create_index(
        "jobs_claim_idx",
        "jobs",
        ["queue", "priority", "run_at", "id"],
        schema=schema,
        postgresql_where=sa.text("state in ('queued', 'retrying')"),
    )
    # Serves enqueue's ON CONFLICT: an idempotency key is unique within its queue.
    op.create_index(
        "jobs_idempotency_idx",
        "jobs",
        ["queue", "idempotency_key"],
        unique=True,
        schema=schema,
        postgresql_where=sa.text("idempotency_key is not null"),
    )
    # Serves `reap_expired`. Its predicate is deliberately not `state = 'running'`, so the
    # fenced writes (which guard on state) can never be planned over it.
    op.create_index(
        "jobs_lease_idx",
        "jobs",
        ["lease_expires_at"],
        schema=schema,
        postgresql_where=sa.text("lease_expires_at is not null"),
    )

    op.create_table(
        "job_events",
        # The primary key leads with job_id, so the one index that every event insert pays
        # for also serves `get_job`'s timeline (job_id, in order); no second index.
        sa.Column("job_id", sa.BigInteger, primary_key=True),
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("from_state", sa.Text, nullable=True),
        sa.Column("to_state", sa.Text, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("worker_id", sa.Text, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("at", sa.TIMESTAMP(timezone=True), nullable=False, server_default=sa.func.now()),
        schema=schema,
    )

    op.create_table(
        "workers",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("hostname", sa.Text, nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("queues", postgresql.ARRAY(sa.Text), nullable=True),
        sa.Column("concurrency", sa.Integer, nullable=False),
        sa.Column(
            "started_at", sa.TIMESTAMP(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "last_seen_at",
            sa.TIMESTAMP(timezone=True),
            nullable=False,
            server_default=sa.func.now(),
        ),
        schema=schema,
    )


def downgrade(schema: str) -> None:
    op.drop_table("workers", schema=schema)
    op.drop_table("job_events", schema=schema)
    op.drop_table("jobs", schema=schema)
