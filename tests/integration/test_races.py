"""Several worker processes, several threads each, racing for the same jobs."""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path

import pytest

from tests.integration._procs import (
    Procs,
    completed_reaches,
    enqueue_records,
    live_workers,
    markers,
    wait_for,
)
from tests.postgres import PgSchema

N_WORKERS = 4
N_JOBS = 2_000
ROUNDS = 3


@pytest.mark.timeout(90)
def test_worker_processes_racing_run_every_job_exactly_once(
    pg_schema: PgSchema, procs: Procs, marker_dir: Path
) -> None:
    workers = [procs.worker("--concurrency", "4") for _ in range(N_WORKERS)]
    # All idle and listening first: one NOTIFY at the enqueue's commit releases them together.
    wait_for(lambda: live_workers(pg_schema) == N_WORKERS, timeout=30, what="every worker to start")
    ids: list[int] = []
    for n in range(1, ROUNDS + 1):  # each round: a burst of jobs, workers idle before it
        ids += enqueue_records(pg_schema, marker_dir, N_JOBS)
        wait_for(
            completed_reaches(pg_schema, n * N_JOBS),
            timeout=60,
            what=f"every job of round {n} to complete",
            interval=0.05,
        )
    for worker in workers:
        worker.signal(signal.SIGTERM)
    for worker in workers:
        assert worker.wait(20) == 0, worker.log()

    assert pg_schema.states() == {"completed": ROUNDS * N_JOBS}
    [(max_attempt,)] = pg_schema.sql("select max(attempt) from {schema}.jobs")
    assert max_attempt == 1  # no lease was lost here, so nothing may have run twice
    done = markers(marker_dir, "done")
    per_job = Counter(job_id for job_id, _, _ in done)
    assert sorted(per_job) == sorted(ids)
    assert [job_id for job_id, n in per_job.items() if n > 1] == []
    assert {attempt for _, attempt, _ in done} == {1}
    running_events = dict(
        pg_schema.sql(
            "select job_id, count(*) from {schema}.job_events"
            " where to_state = 'running' group by job_id"
        )
    )
    assert running_events == dict.fromkeys(ids, 1)
    # It really was a race: the jobs were shared out among the processes.
    by_pid = Counter(pid for _, _, pid in done)
    assert set(by_pid) <= {w.pid for w in workers}
    assert len(by_pid) >= 2, by_pid
