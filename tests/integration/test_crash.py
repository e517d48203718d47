"""Crashes as they happen in production: a worker SIGKILLed or frozen mid-job, its database
connections cut, the database restarted. Workers are real `python -m pgq worker` processes; every
assertion reads the database, as a user's `pgq jobs show` would."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.integration._procs import (
    Procs,
    WorkerProc,
    completed_reaches,
    count,
    enqueue_sleepers,
    get,
    lease_lost_jobs,
    live_workers,
    markers,
    restart_embedded_server,
    restart_reason_to_skip,
    terminate_backends,
    wait_for,
)
from tests.postgres import PgSchema

LEASE = 1.5
REAPER_INTERVAL = 5.0  # the worker's default; the CLI has no flag for it
SLACK = 1.5  # polling, process scheduling on a busy 2-core machine


def holder_of(pg: PgSchema, job_id: int) -> str:
    [(worker_id,)] = pg.sql("select worker_id from {schema}.jobs where id = %s", (job_id,))
    assert worker_id
    return str(worker_id)


@pytest.mark.timeout(60)
def test_sigkilled_worker_job_is_rescued_within_lease_plus_reaper_interval(
    pg_schema: PgSchema, procs: Procs, marker_dir: Path
) -> None:
    [job_id] = enqueue_sleepers(pg_schema, marker_dir, 1, seconds=2.0)
    victim = procs.worker("--lease", str(LEASE), "--concurrency", "1")
    wait_for(lambda: markers(marker_dir, "start"), timeout=20, what="the job to start")
    victim_id = holder_of(pg_schema, job_id)
    assert f"-{victim.pid}-" in victim_id  # <host>-<pid>-<random>: the process we will kill
    rescuer = procs.worker("--lease", str(LEASE), "--concurrency", "1")
    wait_for(lambda: live_workers(pg_schema) == 2, timeout=20, what="the second worker")

    victim.signal(signal.SIGKILL)
    killed_at = time.monotonic()
    assert victim.wait(5) == -signal.SIGKILL

    wait_for(
        lambda: get(pg_schema, job_id).attempt >= 2,
        timeout=LEASE + REAPER_INTERVAL + 10,
        what="the job to be claimed again",
        interval=0.02,
    )
    rescued_after = time.monotonic() - killed_at
    assert rescued_after <= LEASE + REAPER_INTERVAL + SLACK, (
        f"rescued {rescued_after:.2f}s after the kill\n{procs.logs()}"
    )

    wait_for(lambda: get(pg_schema, job_id).state == "completed", timeout=15, what="completion")
    record = get(pg_schema, job_id)
    assert (record.state, record.attempt) == ("completed", 2)
    assert [e.to_state for e in record.events] == [
        "queued", "running", "retrying", "running", "completed",
    ]  # fmt: skip
    taken_back = record.events[2]
    assert (taken_back.from_state, taken_back.attempt) == ("running", 1)
    assert taken_back.worker_id == victim_id
    assert taken_back.error is not None
    assert taken_back.error.startswith(f"lease expired: worker {victim_id} ")
    assert record.events[4].worker_id not in (None, victim_id)
    # What really ran: attempt 1 started in the victim and never finished; attempt 2 ran whole
    # in the rescuer.
    assert sorted(markers(marker_dir, "start")) == [
        (job_id, 1, victim.pid), (job_id, 2, rescuer.pid),
    ]  # fmt: skip
    assert markers(marker_dir, "done") == [(job_id, 2, rescuer.pid)]


@pytest.mark.timeout(60)
def test_frozen_worker_late_result_is_discarded_after_its_lease_was_taken_back(
    pg_schema: PgSchema, procs: Procs, marker_dir: Path
) -> None:
    [job_id] = enqueue_sleepers(pg_schema, marker_dir, 1, seconds=2.0)
    frozen = procs.worker("--lease", str(LEASE), "--concurrency", "1")
    wait_for(lambda: markers(marker_dir, "start"), timeout=20, what="the job to start")
    frozen_id = holder_of(pg_schema, job_id)
    frozen.signal(signal.SIGSTOP)

    rescuer = procs.thread_worker(
        lease=LEASE, reaper_interval=0.5, concurrency=1, poll_interval=0.2
    )
    wait_for(
        lambda: get(pg_schema, job_id).state == "completed",
        timeout=LEASE + 0.5 + 2.0 + 15,
        what="the rescuer to complete the job",
    )
    before = get(pg_schema, job_id)
    assert (before.attempt, before.events[-1].worker_id) == (2, rescuer.id)

    frozen.signal(signal.SIGCONT)  # its sleep is over: it finishes attempt 1 and reports it
    wait_for(
        lambda: any(e.to_state == "discarded" for e in get(pg_schema, job_id).events),
        timeout=15,
        what="the frozen worker's late result to be recorded as discarded",
    )
    after = get(pg_schema, job_id)
    assert (after.state, after.attempt, after.finished_at) == (
        "completed", 2, before.finished_at,
    )  # fmt: skip
    assert after.last_error == before.last_error
    assert [e.to_state for e in after.events] == [
        "queued", "running", "retrying", "running", "completed", "discarded",
    ]  # fmt: skip
    completed, discarded = after.events[4], after.events[5]
    assert (completed.attempt, completed.worker_id) == (2, rescuer.id)
    assert (discarded.attempt, discarded.worker_id) == (1, frozen_id)
    assert discarded.error is not None and "late result discarded" in discarded.error
    # The frozen worker's body really did finish: its result was fenced, not lost in transit.
    assert (job_id, 1, frozen.pid) in markers(marker_dir, "done")
    # And the worker that lost its lease carries on and stops cleanly.
    assert frozen.alive()
    frozen.signal(signal.SIGTERM)
    assert frozen.wait(15) == 0, frozen.log()


def assert_drained_without_loss(pg: PgSchema, ids: list[int], marker_dir: Path) -> None:
    """Every job completed; a job that ran more than once did so only after a lost lease."""
    states = pg.states()
    assert states == {"completed": len(ids)}, states
    done_by_job: dict[int, int] = {}
    for job_id, _, _ in markers(marker_dir, "done"):
        done_by_job[job_id] = done_by_job.get(job_id, 0) + 1
    assert set(done_by_job) == set(ids)
    ran_twice = {job_id for job_id, n in done_by_job.items() if n > 1}
    assert ran_twice <= lease_lost_jobs(pg), ran_twice - lease_lost_jobs(pg)


def stop_cleanly(worker: WorkerProc) -> None:
    assert worker.alive(), worker.log()
    worker.signal(signal.SIGTERM)
    assert worker.wait(20) == 0, worker.log()


@pytest.mark.timeout(90)
def test_worker_survives_cut_connections_and_loses_no_job(
    pg_schema: PgSchema, procs: Procs, marker_dir: Path
) -> None:
    ids = enqueue_sleepers(pg_schema, marker_dir, 400, seconds=0.02)
    worker = procs.worker("--lease", "2", "--concurrency", "4")
    for threshold in (40, 160, 280):
        wait_for(
            completed_reaches(pg_schema, threshold),
            timeout=30,
            what=f"{threshold} jobs completed",
            interval=0.02,
        )
        assert terminate_backends(pg_schema.dsn, worker.app_name) >= 1
        time.sleep(0.1)
        assert worker.alive(), worker.log()
    wait_for(
        lambda: count(pg_schema, "completed") == len(ids),
        timeout=40,
        what="every job to complete",
        interval=0.1,
    )
    assert worker.alive(), worker.log()
    assert_drained_without_loss(pg_schema, ids, marker_dir)
    stop_cleanly(worker)


# Last in this file: it restarts the session's server (every other test only opens connections
# of its own, per call, so nothing else holds a session across the restart).
@pytest.mark.timeout(90)
def test_worker_survives_a_database_restart_and_loses_no_job(
    pg_dsn: str, pg_schema: PgSchema, procs: Procs, marker_dir: Path
) -> None:
    reason = restart_reason_to_skip(pg_dsn)
    if reason is not None:
        pytest.skip(reason)
    ids = enqueue_sleepers(pg_schema, marker_dir, 300, seconds=0.02)
    worker = procs.worker("--lease", "2", "--concurrency", "4")
    wait_for(
        completed_reaches(pg_schema, 60),
        timeout=30,
        what="60 jobs completed",
        interval=0.02,
    )
    restart_embedded_server(pg_dsn, down_s=1.5)  # every session cut, no server for 1.5 s
    assert worker.alive(), worker.log()
    assert count(pg_schema, "completed") < len(ids)  # the restart really was mid-drain
    wait_for(
        lambda: count(pg_schema, "completed") == len(ids),
        timeout=45,
        what="every job to complete after the restart",
        interval=0.1,
    )
    assert worker.alive(), worker.log()
    assert_drained_without_loss(pg_schema, ids, marker_dir)
    stop_cleanly(worker)
