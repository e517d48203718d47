"""The worker's behaviour, the same on both backends: retries, dead letters, Fail / Retry,
unknown tasks, malformed payloads, timeouts, burst mode."""

from __future__ import annotations

import threading
import time

import pytest

import pgq
from tests import tasks
from tests.contract.conftest import Harness
from tests.contract.test_backend_contract import assert_history_follows_state_table


def drain(h: Harness, **kw: object) -> pgq.Worker:
    worker = h.worker(**kw)
    worker.run_until_empty(max_wait=2.0)
    return worker


def test_successful_jobs_complete(harness: Harness) -> None:
    ids = [harness.enqueue(tasks.add, {"a": i, "b": i}).id for i in range(20)]
    ids.append(harness.enqueue(tasks.uses_ctx).id)
    ids.append(harness.enqueue(tasks.async_noop, {"x": 1}).id)
    ids.append(harness.enqueue(tasks.with_kwargs, {"a": 1, "z": 2}).id)
    worker = drain(harness)
    for job_id in ids:
        record = harness.get(job_id)
        assert (record.state, record.attempt) == ("completed", 1), record
        assert_history_follows_state_table(record)
    assert worker.stats.completed == len(ids)


def test_failures_retry_with_backoff_until_they_succeed(harness: Harness) -> None:
    job = harness.enqueue(tasks.fails_until, {"attempt": 3})
    drain(harness)
    record = harness.get(job.id)
    assert (record.state, record.attempt) == ("completed", 3)
    assert record.last_error == "ConnectionError: attempt 2 failed"
    assert [e.to_state for e in record.events] == [
        "queued",
        "running",
        "retrying",
        "running",
        "retrying",
        "running",
        "completed",
    ]
    assert_history_follows_state_table(record)


def test_exhausted_attempts_go_dead_keeping_the_last_error(harness: Harness) -> None:
    job = harness.enqueue(tasks.always_fails)
    drain(harness)
    record = harness.get(job.id)
    assert (record.state, record.attempt) == ("dead", 3)
    assert record.last_error == "attempt 3 of 3 failed: RuntimeError: downstream is down"
    assert_history_follows_state_table(record)


def test_max_attempts_given_at_enqueue_wins_over_the_task(harness: Harness) -> None:
    job = harness.enqueue(tasks.always_fails, max_attempts=1)
    drain(harness)
    assert (harness.get(job.id).state, harness.get(job.id).attempt) == ("dead", 1)


def test_fail_goes_straight_to_dead(harness: Harness) -> None:
    job = harness.enqueue(tasks.gives_up)
    drain(harness)
    record = harness.get(job.id)
    assert (record.state, record.attempt) == ("dead", 1)
    assert record.last_error == "pgq.Fail: the order no longer exists"


def test_retry_waits_the_delay_it_asks_for(harness: Harness) -> None:
    job = harness.enqueue(tasks.retries_later, {"delay": 0.4})
    started = time.monotonic()
    drain(harness)
    record = harness.get(job.id)
    assert (record.state, record.attempt) == ("completed", 2)
    retried, rerun = record.events[2], record.events[3]
    assert retried.to_state == "retrying" and rerun.to_state == "running"
    assert (rerun.at - retried.at).total_seconds() >= 0.39
    assert time.monotonic() - started >= 0.39


def test_unknown_task_fails_its_attempts_naming_the_task(harness: Harness) -> None:
    job = harness.enqueue("billing.tasks.charge", {"amount": 5}, max_attempts=2)
    drain(harness)
    record = harness.get(job.id)
    assert (record.state, record.attempt) == ("dead", 2)
    assert record.last_error is not None and "billing.tasks.charge" in record.last_error
    assert "unknown task" in record.last_error


@pytest.mark.parametrize(
    ("args_json", "reason"),
    [
        ('{"a": 1}', "missing argument(s) b"),
        ("[1, 2]", "must be a JSON object"),
        ('{"a": 1, "b": 2, "zz": 0}', "unexpected argument(s) zz"),
    ],
)
def test_malformed_payload_goes_dead_and_the_worker_carries_on(
    harness: Harness, args_json: str, reason: str
) -> None:
    bad = harness.enqueue_raw("tests.tasks.add", args_json)
    good = harness.enqueue(tasks.add, {"a": 1, "b": 2})
    drain(harness)
    record = harness.get(bad)
    assert (record.state, record.attempt) == ("dead", 1)
    assert record.last_error is not None and "undecodable payload" in record.last_error
    assert reason in record.last_error
    assert harness.get(good.id).state == "completed"


def test_a_task_past_its_timeout_fails_its_attempt(harness: Harness) -> None:
    job = harness.enqueue(tasks.too_slow)
    other = harness.enqueue(tasks.noop)
    started = time.monotonic()
    drain(harness, concurrency=1)
    record = harness.get(job.id)
    assert (record.state, record.attempt) == ("dead", 2)
    assert record.last_error is not None and "timeout of 0.3s" in record.last_error
    assert harness.get(other.id).state == "completed"
    assert time.monotonic() - started < 2.5  # did not wait for the 1.5 s bodies


def test_burst_mode_waits_for_soon_due_jobs_but_not_for_later_ones(harness: Harness) -> None:
    soon = harness.enqueue(tasks.noop, delay=0.3)
    later = harness.enqueue(tasks.noop, delay=3600)
    started = time.monotonic()
    harness.worker().run_until_empty(max_wait=1.0)
    assert time.monotonic() - started < 3.0
    assert harness.get(soon.id).state == "completed"
    assert harness.get(later.id).state == "queued"


def test_worker_serves_only_its_queues(harness: Harness) -> None:
    mine = harness.enqueue(tasks.noop, queue="mine")
    theirs = harness.enqueue(tasks.noop, queue="theirs")
    drain(harness, queues=["mine"])
    assert harness.get(mine.id).state == "completed"
    assert harness.get(theirs.id).state == "queued"


def test_worker_without_queues_serves_every_queue(harness: Harness) -> None:
    ids = [harness.enqueue(tasks.noop, queue=f"q{i}").id for i in range(5)]
    drain(harness)
    assert {harness.get(i).state for i in ids} == {"completed"}


def start_and_wait_until_running(
    h: Harness, job_id: int, **worker_kw: object
) -> tuple[pgq.Worker, threading.Thread]:
    """Start a worker on a thread and return once `job_id` is running (plus a moment)."""
    worker = h.worker(**worker_kw)
    thread = threading.Thread(target=worker.run)
    thread.start()
    deadline = time.monotonic() + 5
    while h.get(job_id).state != "running" and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.1)
    return worker, thread


def test_stop_releases_unstarted_jobs_and_finishes_running_ones(harness: Harness) -> None:
    import tempfile

    marker = tempfile.mkdtemp()
    running = harness.enqueue(tasks.sleep_and_record, {"seconds": 0.5, "marker_dir": marker})
    waiting = [harness.enqueue(tasks.noop, priority=1).id for _ in range(3)]
    worker, thread = start_and_wait_until_running(
        harness, running.id, concurrency=1, prefetch=3, grace=5.0
    )
    worker.stop()
    thread.join(10)
    assert not thread.is_alive()
    assert harness.get(running.id).state == "completed"
    for job_id in waiting:
        record = harness.get(job_id)
        assert (record.state, record.attempt) == ("queued", 0), record
        assert_history_follows_state_table(record)


def test_grace_period_over_fails_the_attempt_with_the_reason(harness: Harness) -> None:
    import tempfile

    job = harness.enqueue(
        tasks.sleep_and_record, {"seconds": 3.0, "marker_dir": tempfile.mkdtemp()}
    )
    worker, thread = start_and_wait_until_running(harness, job.id, concurrency=1, grace=0.2)
    worker.stop()
    thread.join(5)
    assert not thread.is_alive()
    record = harness.get(job.id)
    assert record.state == "retrying"
    assert record.last_error is not None and "grace period" in record.last_error


def test_a_late_success_after_a_timeout_never_wins(harness: Harness) -> None:
    """The watchdog fails the attempt; the body's late success must be discarded, even when
    both results reach the writer together."""
    job = harness.enqueue(tasks.too_slow, max_attempts=1)
    worker = harness.worker(concurrency=1)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            record = harness.get(job.id)
            if any(e.to_state == "discarded" for e in record.events):
                break
            time.sleep(0.05)
    finally:
        worker.stop()
        thread.join(10)
    record = harness.get(job.id)
    assert record.state == "dead"
    assert record.last_error is not None and "timeout" in record.last_error
    assert [e.to_state for e in record.events][-1] == "discarded"


def pgq_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("pgq-")}


def test_a_worker_runs_again_after_it_returned_and_leaves_no_thread(harness: Harness) -> None:
    """Issue #9, 1c: a Worker that returned from run_until_empty runs again, and when a run
    returns every thread it started has ended (a user's suite builds hundreds of workers)."""
    before = pgq_threads()
    job = harness.enqueue(tasks.noop, delay=120)
    worker = harness.worker()
    worker.run_until_empty(max_wait=0.5)
    assert harness.get(job.id).state == "queued"  # due in 120 s: left for a later run
    assert pgq_threads() <= before  # (a stuck body of an earlier test may end meanwhile)
    harness.make_due(job.id)
    worker.run_until_empty(max_wait=0.5)
    assert harness.get(job.id).state == "completed"
    assert pgq_threads() <= before  # (a stuck body of an earlier test may end meanwhile)
    # run() too: stopped from another thread, then run again.
    again = harness.enqueue(tasks.noop)
    timer = threading.Timer(0.5, worker.stop)
    timer.start()
    worker.run()
    assert harness.get(again.id).state == "completed"
    assert pgq_threads() <= before  # (a stuck body of an earlier test may end meanwhile)
    assert worker.stats.completed == 2


def test_a_stop_asked_before_the_run_ends_that_run_at_once(harness: Harness) -> None:
    job = harness.enqueue(tasks.noop)
    worker = harness.worker()
    worker.stop()
    started = time.monotonic()
    worker.run()
    assert time.monotonic() - started < 3.0
    assert harness.get(job.id).state == "queued"
    worker.run_until_empty(max_wait=0.5)  # the stop was for that run only
    assert harness.get(job.id).state == "completed"


def test_a_worker_refuses_to_run_twice_at_once(harness: Harness) -> None:
    worker = harness.worker()
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        deadline = time.monotonic() + 5
        while not any(t.name == "pgq-flusher" for t in pgq_threads()):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        with pytest.raises(RuntimeError, match="running already"):
            worker.run_until_empty(max_wait=0.1)
    finally:
        worker.stop()
        thread.join(15)
    assert not thread.is_alive()


def test_the_event_hook_tells_what_happened_to_every_job(harness: Harness) -> None:
    """The one place later metrics and traces subscribe to (internal API)."""
    from pgq._worker.events import AttemptsFinished, Event, JobsClaimed

    ok = harness.enqueue(tasks.noop)
    dead = harness.enqueue(tasks.gives_up)
    seen: list[Event] = []
    worker = harness.worker()
    unsubscribe = worker._hooks.subscribe(seen.append)
    worker.run_until_empty(max_wait=0.5)
    unsubscribe()
    claimed = {job.id for e in seen if isinstance(e, JobsClaimed) for job in e.jobs}
    outcomes = {
        a.job.id: a.outcome for e in seen if isinstance(e, AttemptsFinished) for a in e.outcomes()
    }
    assert claimed == {ok.id, dead.id}
    assert outcomes == {ok.id: "completed", dead.id: "dead"}
    heard = len(seen)
    later = harness.enqueue(tasks.noop)
    worker.run_until_empty(max_wait=0.5)
    assert harness.get(later.id).state == "completed"
    assert len(seen) == heard  # nothing reaches a subscriber that left
