"""Stopping a worker subprocess with signals, as a process manager (systemd, Kubernetes) does."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.integration._procs import (
    Procs,
    count,
    enqueue_sleepers,
    get,
    markers,
    wait_for,
)
from tests.postgres import PgSchema


@pytest.mark.timeout(60)
def test_sigterm_finishes_the_running_job_and_releases_prefetched_ones(
    pg_schema: PgSchema, procs: Procs, marker_dir: Path
) -> None:
    first, *rest = enqueue_sleepers(pg_schema, marker_dir, 5, seconds=1.5)
    # concurrency 1 and the default prefetch (at least concurrency while jobs are slow): one job
    # runs, one waits claimed.
    worker = procs.worker("--concurrency", "1", "--grace", "20")
    wait_for(lambda: markers(marker_dir, "start"), timeout=20, what="the first job to start")
    wait_for(lambda: count(pg_schema, "running") == 2, timeout=10, what="a prefetched job")
    [(started, _, _)] = markers(marker_dir, "start")
    assert started == first
    [prefetched] = [job_id for job_id in rest if get(pg_schema, job_id).state == "running"]

    worker.signal(signal.SIGTERM)
    assert worker.wait(20) == 0, worker.log()

    record = get(pg_schema, first)
    assert (record.state, record.attempt) == ("completed", 1)
    released = get(pg_schema, prefetched)
    assert (released.state, released.attempt) == ("queued", 0)
    assert [(e.from_state, e.to_state) for e in released.events] == [
        (None, "queued"), ("queued", "running"), ("running", "queued"),
    ]  # fmt: skip
    for job_id in rest:
        assert (get(pg_schema, job_id).state, get(pg_schema, job_id).attempt) == ("queued", 0)
    assert markers(marker_dir, "start") == [(first, 1, worker.pid)]  # nothing else began


@pytest.mark.timeout(60)
def test_sigterm_with_a_job_longer_than_grace_exits_in_time_and_retries_it(
    pg_schema: PgSchema, procs: Procs, marker_dir: Path
) -> None:
    grace = 1.0
    [job_id] = enqueue_sleepers(pg_schema, marker_dir, 1, seconds=30.0)
    worker = procs.worker("--concurrency", "1", "--grace", str(grace))
    wait_for(lambda: markers(marker_dir, "start"), timeout=20, what="the job to start")

    worker.signal(signal.SIGTERM)
    signalled_at = time.monotonic()
    assert worker.wait(grace + 10) == 0, worker.log()
    assert time.monotonic() - signalled_at <= grace + 2.5, worker.log()

    record = get(pg_schema, job_id)
    assert (record.state, record.attempt) == ("retrying", 1)
    assert record.last_error is not None and "grace period" in record.last_error
    failed = record.events[-1]
    assert (failed.from_state, failed.to_state) == ("running", "retrying")
    assert failed.error == record.last_error
    assert markers(marker_dir, "done") == []


@pytest.mark.timeout(60)
def test_second_sigterm_exits_at_once_and_the_job_is_rescued_later(
    pg_schema: PgSchema, procs: Procs, marker_dir: Path
) -> None:
    lease = 1.5
    [job_id] = enqueue_sleepers(pg_schema, marker_dir, 1, seconds=3.0)
    worker = procs.worker("--concurrency", "1", "--grace", "30", "--lease", str(lease))
    wait_for(lambda: markers(marker_dir, "start"), timeout=20, what="the job to start")
    victim_id = get(pg_schema, job_id).events[-1].worker_id

    worker.signal(signal.SIGTERM)
    time.sleep(0.3)  # the first signal is handled: the worker waits for its job (grace 30 s)
    assert worker.alive(), worker.log()
    worker.signal(signal.SIGTERM)
    signalled_at = time.monotonic()
    code = worker.wait(5)
    assert time.monotonic() - signalled_at < 2.0
    assert code != 0  # exited at once, not after its job
    assert get(pg_schema, job_id).state == "running"  # not lost: still held, under a lease

    rescuer = procs.thread_worker(lease=lease, reaper_interval=0.5, concurrency=1)
    wait_for(
        lambda: get(pg_schema, job_id).state == "completed",
        timeout=lease + 0.5 + 3.0 + 15,
        what="the job to be rescued and completed",
    )
    record = get(pg_schema, job_id)
    assert record.attempt == 2
    taken_back = record.events[2]
    assert (taken_back.from_state, taken_back.to_state) == ("running", "retrying")
    assert taken_back.error is not None
    assert taken_back.error.startswith(f"lease expired: worker {victim_id} ")
    assert record.events[-1].worker_id == rescuer.id
