"""Queue policies, the same on both backends: pause, caps, rates, circuits, retention, reload
of live settings, and what `pgq.list_queues` reports."""

from __future__ import annotations

import time

import pytest

import pgq
from tests import tasks
from tests.contract.conftest import Harness

W = "w1"


def claim(h: Harness, queue: str = "default", n: int = 10, **kw: object) -> list[pgq.Enqueued]:
    return h.backend.claim(worker_id=W, wants=[(queue, n)], lease_s=30.0, **kw)  # type: ignore[arg-type, return-value]


def write(h: Harness, *policies: pgq.Queue, live_only: bool = False) -> None:
    h.backend.write_policies(list(policies), worker_id=W, live_only=live_only)


def info(h: Harness, queue: str = "default") -> pgq.QueueInfo:
    [found] = [q for q in pgq.list_queues(h.target, **h.api) if q.name == queue]
    return found


def test_a_queue_without_a_policy_gives_what_is_asked(harness: Harness) -> None:
    for _ in range(5):
        harness.enqueue(tasks.noop)
    assert len(claim(harness, n=3)) == 3
    assert harness.backend.read_policies() == {}


def test_paused_queue_accepts_jobs_and_gives_none_until_resumed(harness: Harness) -> None:
    assert pgq.pause_queue(harness.target, "default", **harness.api) is True
    assert pgq.pause_queue(harness.target, "default", **harness.api) is False
    job = harness.enqueue(tasks.noop)
    assert claim(harness) == []
    assert info(harness).paused and info(harness).counts == {"queued": 1}
    assert pgq.resume_queue(harness.target, "default", **harness.api) is True
    [claimed] = claim(harness)
    assert claimed.id == job.id
    kinds = [e.kind for e in info(harness).events]
    assert kinds[:2] == ["resumed", "paused"]  # newest first


def test_resuming_a_queue_that_was_never_paused_changes_nothing(harness: Harness) -> None:
    assert pgq.resume_queue(harness.target, "never", **harness.api) is False
    assert [q.name for q in pgq.list_queues(harness.target, **harness.api)] == []


def test_pause_rejects_a_bad_queue_name(harness: Harness) -> None:
    with pytest.raises(pgq.ConfigError, match="queue name"):
        pgq.pause_queue(harness.target, "", **harness.api)


def test_concurrency_cap_counts_every_running_job(harness: Harness) -> None:
    write(harness, pgq.Queue("default", concurrency=2))
    for _ in range(5):
        harness.enqueue(tasks.noop)
    first = claim(harness)
    assert len(first) == 2
    assert claim(harness) == []
    assert harness.backend.complete_many([first[0].lease])  # type: ignore[attr-defined]
    assert len(claim(harness)) == 1


def test_a_policy_written_by_this_backend_binds_its_next_claim(harness: Harness) -> None:
    for _ in range(3):
        harness.enqueue(tasks.noop)
    assert len(claim(harness, n=1)) == 1  # no policy yet: the claim without the policy work
    write(harness, pgq.Queue("default", concurrency=2))
    assert len(claim(harness)) == 1  # the cap counts the job already running


def test_rate_limit_holds_jobs_back_without_using_attempts(harness: Harness) -> None:
    write(harness, pgq.Queue("default", rate=pgq.Rate(3, per=0.5)))
    ids = [harness.enqueue(tasks.noop).id for _ in range(5)]
    assert len(claim(harness)) == 3
    assert claim(harness) == []
    waiting = [harness.get(i) for i in ids if harness.get(i).state == "queued"]
    assert len(waiting) == 2 and all(r.attempt == 0 for r in waiting)
    time.sleep(0.5 * 1.05 + 0.1)
    assert len(claim(harness)) == 2


def test_circuit_opens_after_failures_and_half_opens_after_cooldown(harness: Harness) -> None:
    circuit = pgq.Circuit(failures=2, window=30.0, cooldown=0.4, probes=1)
    write(harness, pgq.Queue("default", circuit=circuit))
    for _ in range(4):
        harness.enqueue(tasks.noop)
    b = harness.backend
    assert b.record_circuit_failures("default", count=1, error="boom", worker_id=W) is None
    assert info(harness).circuit_state == "closed"
    assert b.record_circuit_failures("default", count=1, error="boom", worker_id=W) == "open"
    opened = info(harness)
    assert opened.circuit_state == "open"
    assert opened.circuit_reason == "2 failures within 30s; last: boom"
    assert claim(harness) == []  # open: nothing claimed, no attempt used
    time.sleep(0.5)
    assert info(harness).circuit_state == "half_open"
    probes = claim(harness)
    assert [j.probe for j in probes] == [True]  # one probe at a time
    assert claim(harness) == []
    assert b.record_probe_success("default", worker_id=W) is True
    assert info(harness).circuit_state == "closed"
    rest = claim(harness)
    assert len(rest) == 3 and not any(j.probe for j in rest)
    moves = [(e.from_state, e.to_state) for e in info(harness).events if e.kind == "circuit"]
    assert moves == [("half_open", "closed"), ("open", "half_open"), ("closed", "open")]


def test_a_failed_probe_reopens_the_circuit(harness: Harness) -> None:
    circuit = pgq.Circuit(failures=1, window=30.0, cooldown=0.3, probes=2)
    write(harness, pgq.Queue("default", circuit=circuit))
    for _ in range(4):
        harness.enqueue(tasks.noop)
    b = harness.backend
    assert b.record_circuit_failures("default", count=1, error="down", worker_id=W) == "open"
    time.sleep(0.4)
    assert b.advance_circuits() == 1
    assert b.advance_circuits() == 0
    assert len(claim(harness)) == 2
    assert b.record_circuit_failures("default", count=1, error="still down", worker_id=W) == (
        "open"
    )
    reopened = info(harness)
    assert reopened.circuit_state == "open"
    assert reopened.circuit_reason == "probe failed: still down"
    assert claim(harness) == []


def test_failures_outside_the_window_do_not_open_the_circuit(harness: Harness) -> None:
    write(harness, pgq.Queue("default", circuit=pgq.Circuit(failures=2, window=0.3)))
    b = harness.backend
    assert b.record_circuit_failures("default", count=1, error="a", worker_id=W) is None
    time.sleep(0.4)
    assert b.record_circuit_failures("default", count=1, error="b", worker_id=W) is None
    assert info(harness).circuit_state == "closed"


def test_reload_writes_live_settings_and_keeps_restart_only_ones(harness: Harness) -> None:
    write(harness, pgq.Queue("default", concurrency=2, max_attempts=3, rate=pgq.Rate(10)))
    changed = pgq.Queue("default", concurrency=9, max_attempts=7, rate=pgq.Rate(20, per=2.0))
    write(harness, changed, live_only=True)
    stored = harness.backend.read_policies()["default"]
    assert (stored.concurrency, stored.max_attempts, stored.rate) == (2, 7, pgq.Rate(20, 2.0))
    harness.backend.register_worker(W, hostname="h", pid=1, queues=None, concurrency=1)
    harness.backend.report_restart_required(W, ["queues.default.concurrency 2 -> 9"])
    assert info(harness).restart_required == ["queues.default.concurrency 2 -> 9"]
    harness.backend.report_restart_required(W, [])
    assert info(harness).restart_required == []


def test_queue_max_attempts_applies_to_jobs_without_their_own(harness: Harness) -> None:
    write(harness, pgq.Queue("default", max_attempts=1))
    job = harness.enqueue(tasks.noop)
    claim(harness)
    harness.expire_lease(job.id)
    assert harness.backend.reap_expired(limit=10, default_max_attempts=5) == {"default": 1}
    assert harness.get(job.id).state == "dead"


def test_retention_prunes_finished_jobs_with_their_events(harness: Harness) -> None:
    write(harness, pgq.Queue("default", retention=pgq.Retention(completed=0.2, dead=3600.0)))
    done = harness.enqueue(tasks.noop, idempotency_key="k1")
    dead = harness.enqueue(tasks.noop)
    kept = harness.enqueue(tasks.noop, queue="other")
    jobs = {j.id: j for j in claim(harness)}
    harness.backend.complete_many([jobs[done.id].lease])  # type: ignore[attr-defined]
    harness.backend.fail(jobs[dead.id].lease, pgq._core.domain.GiveUp("no"), error="no")  # type: ignore[attr-defined]
    [other] = claim(harness, "other")
    harness.backend.complete_many([other.lease])  # type: ignore[attr-defined]
    assert harness.backend.prune_finished(limit=100) == 0
    time.sleep(0.3)
    assert harness.backend.prune_finished(limit=100) == 1
    assert pgq.get_job(harness.target, done.id, **harness.api) is None
    assert harness.get(dead.id).state == "dead"  # dead jobs keep 1 hour here
    assert harness.get(kept.id).state == "completed"  # default retention: a day
    again = harness.enqueue(tasks.noop, idempotency_key="k1")
    assert again.created and again.id != done.id  # the key was freed with its row


def test_list_queues_reports_depth_running_and_policy(harness: Harness) -> None:
    write(harness, pgq.Queue("capped", concurrency=3, rate=pgq.Rate(50)))
    for _ in range(4):
        harness.enqueue(tasks.noop, queue="capped")
    harness.enqueue(tasks.noop, queue="plain")
    claim(harness, "capped", n=1)
    queues = {q.name: q for q in pgq.list_queues(harness.target, **harness.api)}
    assert sorted(queues) == ["capped", "plain"]
    capped = queues["capped"]
    assert capped.counts == {"queued": 3, "running": 1} and capped.running == 1
    assert capped.policy is not None and capped.policy.concurrency == 3
    assert capped.policy.rate == pgq.Rate(50)
    assert capped.oldest_runnable_age_s is not None and capped.oldest_runnable_age_s >= 0
    assert queues["plain"].policy is None and not queues["plain"].paused


def test_a_policy_row_written_elsewhere_is_honoured_by_the_next_claims(harness: Harness) -> None:
    harness.enqueue(tasks.noop)
    harness.enqueue(tasks.noop, queue="other")
    assert len(claim(harness, "default")) == 1  # no row: the backend remembers that a while
    pgq.pause_queue(harness.target, "other", **harness.api)  # another connection writes it
    assert claim(harness, "other") == []  # a row the backend did not know of: nothing yet
    pgq.resume_queue(harness.target, "other", **harness.api)  # a row now, with no limit
    deadline = time.monotonic() + 3.0
    while not (got := claim(harness, "other")) and time.monotonic() < deadline:
        time.sleep(0.05)  # within a second the backend reads the rows again
    assert len(got) == 1
