"""jobs: check state, queue and max_attempts with domains instead of table check constraints

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23

A table's check constraints are kept in the relcache as text: every statement that writes
`jobs` parses, plans and compiles each of them again (ExecRelCheck), about 10 us of server CPU
per single-job insert on PG 15 here (perf: ExecConstraints was 8-9 percent of the backend's
samples for a one-job enqueue). A domain's checks are compiled once per backend (typcache), so
the same rules, still enforced by the database, cost next to nothing per statement.

The columns change type to domains that have no checks yet, which PostgreSQL does without
rewriting the table; ALTER DOMAIN ADD CONSTRAINT then checks the existing rows with a scan.
jobs_claim_idx and jobs_idempotency_idx are rebuilt (their columns or predicate change type),
under the ACCESS EXCLUSIVE lock of the migration's transaction.
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

STATES = "('queued', 'running', 'retrying', 'completed', 'dead', 'cancelled')"


def upgrade(schema: str) -> None:
    s = f'"{schema}"'  # validated by _config: ^[a-z_][a-z0-9_]{0,47}$
    op.execute(f"create domain {s}.job_state as text")
    op.execute(f"create domain {s}.queue_name as text")
    op.execute(f"create domain {s}.max_attempts as integer")
    op.execute(
        f"alter table {s}.jobs"
        f" alter column state type {s}.job_state,"
        f" alter column queue type {s}.queue_name,"
        f" alter column max_attempts type {s}.max_attempts"
    )
    op.execute(
        f"alter domain {s}.job_state add constraint job_state_check check (value in {STATES})"
    )
    op.execute(
        f"alter domain {s}.queue_name"
        " add constraint queue_name_check check (char_length(value) between 1 and 63)"
    )
    op.execute(
        f"alter domain {s}.max_attempts add constraint max_attempts_check check (value >= 1)"
    )
    op.execute(
        f"alter table {s}.jobs"
        " drop constraint jobs_state_check,"
        " drop constraint jobs_queue_check,"
        " drop constraint jobs_max_attempts_check"
    )


def downgrade(schema: str) -> None:
    s = f'"{schema}"'
    op.execute(
        f"alter table {s}.jobs"
        " alter column state type text,"
        " alter column queue type text,"
        " alter column max_attempts type integer,"
        f" add constraint jobs_state_check check (state in {STATES}),"
        " add constraint jobs_queue_check check (char_length(queue) between 1 and 63),"
        " add constraint jobs_max_attempts_check"
        " check (max_attempts is null or max_attempts >= 1)"
    )
    op.execute(f"drop domain {s}.job_state")
    op.execute(f"drop domain {s}.queue_name")
    op.execute(f"drop domain {s}.max_attempts")
