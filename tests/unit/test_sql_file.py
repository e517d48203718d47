"""postgres.sql: one named statement per backend method, documented, psycopg-safe."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pgq._backends import postgres
from pgq._backends.postgres import QUERIES, PostgresBackend, load_queries

# Statements run by a method of another name, and why.
HELPERS = {
    "job_events": "get_job / list_jobs load timelines with it",
    "job_state": "retry_job / cancel_job explain why nothing moved",
    "prune_workers": "reap_expired runs it",
    "check_schema": "check_database, at worker start",
    "enqueue_one": "enqueue_many runs it for a batch of one with an idempotency key",
    "enqueue_one_unkeyed": "enqueue_many runs it for a batch of one without a key",
    "enqueue_many_unkeyed": "enqueue_many runs it for a batch without idempotency keys",
    "copy_job_ids": "enqueue_many's COPY path for large plain batches",
    "copy_jobs": "enqueue_many's COPY path for large plain batches",
    "copy_events": "enqueue_many's COPY path for large plain batches",
    "copy_notify": "enqueue_many's COPY path for large plain batches",
    "enqueue_one_now": "enqueue_many runs it for one job due now, with no key",
    "claim_plain": "claim runs it when none of the queues had a policy row",
    "write_policy": "write_policies runs it for a worker start (every setting)",
    "write_live_policy": "write_policies runs it for a reload (live settings only)",
    "circuit_for_update": "record_circuit_failures / record_probe_success read the circuit",
    "circuit_write": "record_circuit_failures / record_probe_success write it back",
    "queue_events": "list_queues loads each queue's latest changes with it",
    "restart_notes": "list_queues shows what workers refused to reload",
}


def test_every_statement_belongs_to_a_backend_method() -> None:
    methods = {m for m in dir(PostgresBackend) if not m.startswith("_")}
    for name in QUERIES:
        assert name in methods or name in HELPERS, f"{name} has no method"
    for name in (
        "enqueue_many",
        "claim",
        "extend_leases",
        "complete_many",
        "fail",
        "release",
        "reap_expired",
        "get_job",
        "list_jobs",
        "retry_job",
        "cancel_job",
        "runnable_queues",
        "next_due_in",
        "register_worker",
        "worker_heartbeat",
        "deregister_worker",
        "read_policies",
        "set_paused",
        "advance_circuits",
        "prune_finished",
        "list_queues",
        "report_restart_required",
    ):
        assert name in QUERIES, f"method {name} has no named statement"


def test_every_statement_is_documented_lower_case_and_psycopg_safe() -> None:
    text = Path(postgres.__file__).with_suffix(".sql").read_text()
    blocks = re.split(r"^-- name: ", text, flags=re.MULTILINE)[1:]
    assert len(blocks) == len(QUERIES)
    for block in blocks:
        name, _, rest = block.partition("\n")
        assert rest.startswith("-- "), f"{name} has no comment saying what it does"
    for name, statement in QUERIES.items():
        assert "select *" not in statement and "returning *" not in statement, name
        assert not re.search(r"\b(SELECT|UPDATE|INSERT|WHERE|FROM)\b", statement), name
        assert not re.search(r"%(?!\(\w+\)s)", statement), f"{name}: a bare percent sign"


def test_loader_rejects_duplicate_names() -> None:
    with pytest.raises(ValueError, match="twice"):
        load_queries("-- name: a\nselect 1;\n-- name: a\nselect 2;\n")
