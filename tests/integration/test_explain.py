"""The hot statements keep their indexes, even under a generic plan over stale statistics
(PERFORMANCE.md: a completion planned over a partial index took seconds per batch; a claim
scanned past a 200,000-job flood to find a quiet queue's job)."""

from __future__ import annotations

import re
from typing import Any

import psycopg
import pytest

from pgq._backends.postgres import _rendered
from tests.postgres import PgSchema

FLOOD = 50_000


def _as_prepared(statement: str) -> tuple[str, list[str]]:
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    return re.sub(r"%\((\w+)\)s", number, statement), names


def generic_plan(pg: PgSchema, name: str, params: dict[str, Any], *, analyze: bool = False) -> str:
    """EXPLAIN the statement as a prepared, generic plan (works on PostgreSQL 14+)."""
    text, names = _as_prepared(_rendered(pg.schema)[name])
    with psycopg.connect(pg.dsn) as conn:
        conn.execute("set plan_cache_mode = force_generic_plan")
        conn.execute(f"prepare stmt as {text}")  # type: ignore[arg-type]
        args = ", ".join(_literal(conn, params[n]) for n in names)
        option = "(analyze, costs off)" if analyze else "(costs off)"
        call = f"stmt({args})" if args else "stmt"
        rows = conn.execute(f"explain {option} execute {call}").fetchall()  # type: ignore[arg-type]
        conn.rollback()
    return "\n".join(r[0] for r in rows)


def _literal(conn: psycopg.Connection[Any], value: Any) -> str:
    if isinstance(value, list):
        inner = ",".join(str(v) if isinstance(v, int) else f'"{v}"' for v in value)
        return f"'{{{inner}}}'"
    return psycopg.sql.Literal(value).as_string(conn)


@pytest.fixture
def stale_stats(pg_schema: PgSchema) -> PgSchema:
    """Statistics taken while the table was nearly empty, then a flood arrives."""
    pg_schema.enqueue_noops(3, queue="quiet")
    pg_schema.sql("analyze {schema}.jobs")
    pg_schema.sql(
        "insert into {schema}.jobs (queue, task, args) "
        "select 'flood', 'tests.tasks.noop', '{{}}' from generate_series(1, %s)",
        [FLOOD],
    )
    pg_schema.sql(
        "update {schema}.jobs set state = 'running', attempt = 1, worker_id = 'w1', "
        "lease_expires_at = now() + interval '1 hour' where id <= 1000"
    )
    return pg_schema


def test_claim_for_a_quiet_queue_never_scans_the_flood(stale_stats: PgSchema) -> None:
    plan = generic_plan(
        stale_stats,
        "claim",
        {
            "queues": ["quiet"],
            "limits": [10],
            "worker_id": "w",
            "lease_s": 30.0,
            "task_names": ["t"],
            "task_max_attempts": [3],
            "guarded": [],
        },
        analyze=True,
    )
    assert "jobs_claim_idx" in plan, plan
    assert not re.search(r"Seq Scan on jobs", plan), plan
    removed = [int(n) for n in re.findall(r"Rows Removed by Filter: (\d+)", plan)]
    assert all(n < 100 for n in removed), plan


def test_plain_claim_for_a_quiet_queue_never_scans_the_flood(stale_stats: PgSchema) -> None:
    plan = generic_plan(
        stale_stats,
        "claim_plain",
        {
            "queues": ["quiet"],
            "limits": [10],
            "worker_id": "w",
            "lease_s": 30.0,
            "task_names": ["t"],
            "task_max_attempts": [3],
        },
        analyze=True,
    )
    assert "jobs_claim_idx" in plan, plan
    assert not re.search(r"Seq Scan on jobs", plan), plan
    removed = [int(n) for n in re.findall(r"Rows Removed by Filter: (\d+)", plan)]
    assert all(n < 100 for n in removed), plan


def test_capped_and_rated_claim_counts_through_its_indexes(stale_stats: PgSchema) -> None:
    stale_stats.sql(
        "insert into {schema}.queues (name, concurrency, rate_limit, rate_per_s) "
        "values ('flood', 5000, 100000, 1.0)"
    )
    plan = generic_plan(
        stale_stats,
        "claim",
        {
            "queues": ["flood", "quiet"],
            "limits": [10, 10],
            "worker_id": "w",
            "lease_s": 30.0,
            "task_names": ["t"],
            "task_max_attempts": [3],
            "guarded": ["flood"],
        },
        analyze=True,
    )
    assert "jobs_leased_queue_idx" in plan and "queue_starts_pkey" in plan, plan
    assert not re.search(r"Seq Scan on jobs", plan), plan
    removed = [int(n) for n in re.findall(r"Rows Removed by Filter: (\d+)", plan)]
    assert all(n < 100 for n in removed), plan


def test_completion_batch_joins_through_the_primary_key(stale_stats: PgSchema) -> None:
    ids = list(range(1, 1001))
    plan = generic_plan(
        stale_stats,
        "complete_many",
        {"ids": ids, "attempts": [1] * 1000, "worker_id": "w1", "discarded": "late: "},
        analyze=True,
    )
    update_part = plan.split("CTE logged")[0]
    assert "jobs_pkey" in update_part, plan
    assert "jobs_leased_queue_idx" not in update_part and "Seq Scan on jobs" not in update_part, (
        plan
    )


@pytest.mark.parametrize("name", ["extend_leases", "release"])
def test_fenced_batch_writes_use_the_primary_key(stale_stats: PgSchema, name: str) -> None:
    params = {
        "ids": [1, 2],
        "attempts": [1, 1],
        "worker_id": "w1",
        "lease_s": 30.0,
        "channel": "x",
        "reason": "released",
    }
    plan = generic_plan(stale_stats, name, params)
    assert "jobs_pkey" in plan, plan
    assert "jobs_leased_queue_idx" not in plan and "Seq Scan on jobs" not in plan, plan


def test_fail_uses_the_primary_key(stale_stats: PgSchema) -> None:
    params = {
        "job_id": 5,
        "attempt": 1,
        "worker_id": "w1",
        "to_state": "retrying",
        "delay_s": 1.0,
        "error": "x",
        "discarded": "late: ",
    }
    plan = generic_plan(stale_stats, "fail", params)
    assert "jobs_pkey" in plan and "Seq Scan on jobs" not in plan, plan


def test_reaper_reads_only_leased_rows(stale_stats: PgSchema) -> None:
    plan = generic_plan(
        stale_stats, "reap_expired", {"limit": 100, "default_max_attempts": 5, "channel": "x"}
    )
    assert "jobs_leased_queue_idx" in plan and "Seq Scan on jobs" not in plan, plan


def test_runnable_queues_is_a_loose_index_scan(stale_stats: PgSchema) -> None:
    plan = generic_plan(stale_stats, "runnable_queues", {}, analyze=True)
    assert "jobs_claim_idx" in plan and "Seq Scan on jobs" not in plan, plan


def test_idempotent_enqueue_uses_its_unique_index(pg_schema: PgSchema) -> None:
    [(indexdef,)] = pg_schema.sql(
        "select indexdef from pg_indexes where schemaname = %s and indexname = "
        "'jobs_idempotency_idx'",
        [pg_schema.schema],
    )
    assert "UNIQUE" in indexdef and "idempotency_key IS NOT NULL" in indexdef


def test_retention_reads_only_finished_rows_past_their_time(pg_schema: PgSchema) -> None:
    pg_schema.sql(
        "insert into {schema}.jobs (queue, task, args, state, finished_at) "
        "select 'q' || (n %% 3), 'tests.tasks.noop', '{{}}', "
        "       case when n %% 10 = 0 then 'dead' else 'queued' end, "
        "       case when n %% 10 = 0 then now() - interval '30 days' end "
        "from generate_series(1, %s) as n",
        [FLOOD],
    )
    pg_schema.sql("analyze {schema}.jobs")
    plan = generic_plan(
        pg_schema,
        "prune_finished",
        {"limit": 500, "completed_s": 86400.0, "dead_s": 1209600.0},
        analyze=True,
    )
    assert "jobs_finished_idx" in plan, plan
    assert not re.search(r"Seq Scan on jobs", plan), plan
