"""Workers under queue policies, the same on both backends: circuits opened by real failures
and closed by a probe, queue retry settings and timeouts, pause, and config file reloads."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import pgq
from tests import tasks
from tests.contract.conftest import Harness
from tests.integration._procs import wait_for


@pytest.fixture
def downstream() -> Iterator[dict[str, bool]]:
    tasks.DOWNSTREAM["up"] = False
    yield tasks.DOWNSTREAM
    tasks.DOWNSTREAM["up"] = False


def start(h: Harness, **kw: object) -> tuple[pgq.Worker, threading.Thread]:
    worker = h.worker(**kw)
    thread = threading.Thread(target=worker.run, name="test-worker", daemon=True)
    thread.start()
    return worker, thread


def stop(worker: pgq.Worker, thread: threading.Thread) -> None:
    worker.stop()
    thread.join(15)
    assert not thread.is_alive()


def wait_policy_written(h: Harness, name: str) -> None:
    wait_for(
        lambda: h.backend.read_policies().get(name),
        timeout=10,
        what="the worker to write its policy",
    )


def queue_info(h: Harness, name: str) -> pgq.QueueInfo | None:
    found = [q for q in pgq.list_queues(h.target, **h.api) if q.name == name]
    return found[0] if found else None


@pytest.mark.timeout(60)
def test_circuit_opens_on_failures_then_a_probe_closes_it(
    harness: Harness, downstream: dict[str, bool]
) -> None:
    circuit = pgq.Circuit(failures=3, window=30.0, cooldown=0.5, probes=1)
    ids = [harness.enqueue(tasks.depends_on_downstream).id for _ in range(12)]
    worker, thread = start(
        harness, queues=[pgq.Queue("flaky", circuit=circuit)], concurrency=1, prefetch=0
    )
    try:
        wait_for(
            lambda: (q := queue_info(harness, "flaky")) and q.circuit_state == "open",
            timeout=10,
            what="the circuit to open",
        )
        time.sleep(0.2)
        attempts = sum(harness.get(i).attempt for i in ids)
        assert 3 <= attempts <= 4  # three opened it; one more may have been in flight
        downstream["up"] = True
        wait_for(
            lambda: all(harness.get(i).state == "completed" for i in ids),
            timeout=20,
            what="every job to complete once the downstream is back",
        )
    finally:
        stop(worker, thread)
    info = queue_info(harness, "flaky")
    assert info is not None and info.circuit_state == "closed"
    moves = [(e.from_state, e.to_state) for e in reversed(info.events) if e.kind == "circuit"]
    assert moves[0] == ("closed", "open")
    assert moves[-1] == ("half_open", "closed")
    assert info.events[0].reason == "a probe succeeded"


def test_queue_retry_settings_apply_to_tasks_without_their_own(harness: Harness) -> None:
    plain = harness.enqueue(tasks.queue_settings_apply)
    own = harness.enqueue(tasks.always_fails)  # its task says max_attempts=3
    policy = pgq.Queue("default", max_attempts=2, backoff=pgq.Backoff(base=0.0, cap=0.0))
    harness.worker(queues=[policy]).run_until_empty(max_wait=2.0)
    assert (harness.get(plain.id).state, harness.get(plain.id).attempt) == ("dead", 2)
    assert (harness.get(own.id).state, harness.get(own.id).attempt) == ("dead", 3)


def test_queue_timeout_fails_an_attempt_of_a_task_without_one(harness: Harness) -> None:
    job = harness.enqueue(tasks.sleeps_past_queue_timeout)
    policy = pgq.Queue("default", timeout=0.2, max_attempts=1)
    harness.worker(queues=[policy]).run_until_empty(max_wait=2.0)
    record = harness.get(job.id)
    assert record.state == "dead"
    assert record.last_error is not None and "timeout of 0.2s" in record.last_error


def test_a_queue_paused_by_config_runs_nothing(harness: Harness) -> None:
    job = harness.enqueue(tasks.noop)
    other = harness.enqueue(tasks.noop, queue="other")
    worker = harness.worker(queues=[pgq.Queue("default", paused=True), "other"])
    worker.run_until_empty(max_wait=0.5)
    assert harness.get(job.id).state == "queued"
    assert harness.get(other.id).state == "completed"
    info = queue_info(harness, "default")
    assert info is not None and info.paused


@pytest.mark.timeout(60)
def test_config_reload_applies_live_settings_and_reports_restart_only_ones(
    harness: Harness, tmp_path: Path
) -> None:
    config = tmp_path / "pgq.toml"
    config.write_text("[queues.default]\nmax_attempts = 1\nrate = { limit = 50 }\n")
    worker, thread = start(harness, config=config)
    try:
        wait_policy_written(harness, "default")
        config.write_text(
            "[queues.default]\nmax_attempts = 4\nrate = { limit = 80, per = 2.0 }\n"
            "concurrency = 3\n"
        )
        stored = wait_for(
            lambda: (p := harness.backend.read_policies()["default"]).max_attempts == 4 and p,
            timeout=10,
            what="the reloaded max_attempts to be stored",
        )
        assert stored.rate == pgq.Rate(80, per=2.0)
        assert stored.concurrency is None  # restart-only: the worker kept its value
        info = wait_for(
            lambda: (q := queue_info(harness, "default")) and q.restart_required and q,
            timeout=10,
            what="restart required to be reported",
        )
        assert info.restart_required == ["queues.default.concurrency none -> 3"]
        config.write_text("[queues.default]\nmax_attempts = -1\n")  # refused: nothing changes
        time.sleep(2.0)
        assert harness.backend.read_policies()["default"].max_attempts == 4
        assert worker.policies["default"].max_attempts == 4
    finally:
        stop(worker, thread)


def test_a_bad_config_file_stops_the_worker_before_it_starts(
    harness: Harness, tmp_path: Path
) -> None:
    config = tmp_path / "pgq.toml"
    config.write_text("[queues.emails]\nconcurrency = -1\n")
    with pytest.raises(pgq.ConfigError, match=r"queues\.emails\.concurrency"):
        harness.worker(config=config)
    config.write_text("[queues.emails]\nrate = { limit = 0 }\n")
    with pytest.raises(pgq.ConfigError, match=r"queues\.emails\.rate\.limit"):
        harness.worker(config=config)
    config.write_text("[queues.emails]\ncircuit = { cooldown = -1.0 }\n")
    with pytest.raises(pgq.ConfigError, match=r"queues\.emails\.circuit\.cooldown"):
        harness.worker(config=config)
    config.write_text("[queues.emails]\nconcurency = 1\n")
    with pytest.raises(pgq.ConfigError, match=r"queues\.emails\.concurency: unknown key"):
        harness.worker(config=config)


@pytest.mark.timeout(60)
def test_burst_mode_leaves_jobs_an_open_circuit_holds_back(
    harness: Harness, downstream: dict[str, bool]
) -> None:
    circuit = pgq.Circuit(failures=1, window=30.0, cooldown=300.0)
    jobs = [harness.enqueue(tasks.depends_on_downstream).id for _ in range(3)]
    worker = harness.worker(queues=[pgq.Queue("flaky", circuit=circuit)], concurrency=1, prefetch=0)
    started = time.monotonic()
    worker.run_until_empty(max_wait=0.5)
    assert time.monotonic() - started < 5.0
    assert sorted(harness.get(i).attempt for i in jobs) == [0, 0, 1]
    info = queue_info(harness, "flaky")
    assert info is not None and info.circuit_state == "open"


@pytest.mark.timeout(60)
def test_a_lease_lost_to_the_reaper_counts_toward_the_circuit(harness: Harness) -> None:
    circuit = pgq.Circuit(failures=1, window=30.0, cooldown=300.0)
    job = harness.enqueue(tasks.noop, queue="flaky")
    [claimed] = harness.backend.claim(worker_id="ghost", wants=[("flaky", 1)], lease_s=30.0)
    harness.expire_lease(claimed.id)
    worker, thread = start(
        harness, queues=[pgq.Queue("flaky", circuit=circuit)], reaper_interval=0.2
    )
    try:
        info = wait_for(
            lambda: (q := queue_info(harness, "flaky")) and q.circuit_state == "open" and q,
            timeout=10,
            what="the reaped lease to open the circuit",
        )
    finally:
        stop(worker, thread)
    assert info.circuit_reason == "1 failures within 30s; last: lease lost to the reaper"
    # The reaper counts the loss just after it made the job runnable again, so the worker may
    # have claimed it in between; either way the job is not lost.
    record = harness.get(job.id)
    assert (record.state, record.attempt) in {("retrying", 1), ("completed", 2)}


@pytest.mark.timeout(60)
def test_pausing_in_the_config_file_applies_to_a_running_worker(
    harness: Harness, tmp_path: Path
) -> None:
    config = tmp_path / "pgq.toml"
    config.write_text("[queues.default]\nmax_attempts = 2\n")
    worker, thread = start(harness, config=config)
    try:
        wait_policy_written(harness, "default")
        config.write_text("[queues.default]\nmax_attempts = 2\npaused = true\n")
        wait_for(
            lambda: (q := queue_info(harness, "default")) and q.paused,
            timeout=10,
            what="the file's pause to apply",
        )
        job = harness.enqueue(tasks.noop)
        time.sleep(1.0)
        assert harness.get(job.id).state == "queued"
        config.write_text("[queues.default]\nmax_attempts = 2\npaused = false\n")
        wait_for(
            lambda: harness.get(job.id).state == "completed",
            timeout=10,
            what="the job to run once the file resumes the queue",
        )
    finally:
        stop(worker, thread)
