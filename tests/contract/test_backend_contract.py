"""What every backend promises, at the Backend port and through the public API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

import pgq
from pgq._core.domain import TRANSITIONS, GiveUp, Lease, RetryIn, State
from tests import tasks
from tests.contract.conftest import Harness


def claim(
    h: Harness,
    *,
    worker: str = "w1",
    queue: str = "default",
    limit: int = 10,
    lease_s: float = 30.0,
):
    return h.backend.claim(worker_id=worker, wants=[(queue, limit)], lease_s=lease_s)


def assert_history_follows_state_table(record: pgq.JobRecord) -> None:
    """Every event is an allowed move from the state before it (discarded events change nothing)."""
    state: str | None = None
    for event in record.events:
        if event.to_state == "discarded":
            continue
        if state is None:
            assert event.from_state is None and event.to_state == "queued"
        else:
            assert event.from_state == state
            assert State(event.to_state) in TRANSITIONS[State(state)], (state, event)
        state = event.to_state
    assert state == record.state


# -- enqueue -----------------------------------------------------------------------------------


def test_enqueue_creates_a_queued_job_with_its_first_event(harness: Harness) -> None:
    job = harness.enqueue(tasks.add, {"a": 1, "b": 2})
    assert job.created is True and isinstance(job.id, int)
    record = harness.get(job.id)
    assert (record.state, record.attempt, record.queue, record.task) == (
        "queued",
        0,
        "default",
        "tests.tasks.add",
    )
    assert record.args == {"a": 1, "b": 2}
    [event] = record.events
    assert (event.from_state, event.to_state, event.attempt) == (None, "queued", 0)


def test_enqueue_by_dotted_name_and_task_queue(harness: Harness) -> None:
    job = harness.enqueue("tests.tasks.send_email", {"to": "a@b.c"})
    record = harness.get(job.id)
    assert record.queue == "emails"  # the registered task's queue
    assert record.max_attempts == 3
    unknown = harness.enqueue("other_service.tasks.thing", {"anything": [1, 2]})
    assert harness.get(unknown.id).task == "other_service.tasks.thing"


def test_idempotency_key_is_scoped_to_the_queue(harness: Harness) -> None:
    first = harness.enqueue(tasks.send_email, {"to": "a@b.c"}, idempotency_key="order-5512")
    again = harness.enqueue("tests.tasks.send_email", {"to": "x@y.z"}, idempotency_key="order-5512")
    assert again.id == first.id and again.created is False
    elsewhere = harness.enqueue(
        tasks.send_email, {"to": "a@b.c"}, idempotency_key="order-5512", queue="other"
    )
    assert elsewhere.created is True and elsewhere.id != first.id
    record = harness.get(first.id)
    assert record.args == {"to": "a@b.c"}
    # The keyed statement writes the first event too; the repeat writes none.
    assert [(e.from_state, e.to_state, e.attempt) for e in record.events] == [(None, "queued", 0)]


def test_enqueue_many_keeps_input_order_and_folds_duplicate_keys(harness: Harness) -> None:
    existing = harness.enqueue(tasks.noop, idempotency_key="k0")
    specs = [
        pgq.JobSpec(task=tasks.noop),
        pgq.JobSpec(task=tasks.noop, idempotency_key="k0"),
        pgq.JobSpec(task=tasks.add, args={"a": 1, "b": 1}, idempotency_key="k1"),
        pgq.JobSpec(task=tasks.noop, idempotency_key="k1"),
        pgq.JobSpec(task="tests.tasks.noop", priority=-5),
    ]
    out = pgq.enqueue_many(harness.target, specs, **harness.api)
    assert len(out) == 5
    assert out[1].id == existing.id and out[1].created is False
    assert out[2].created is True and out[3].id == out[2].id and out[3].created is False
    assert out[0].created and out[4].created
    assert len({out[0].id, out[2].id, out[4].id, existing.id}) == 4
    assert out[0].id < out[2].id < out[4].id
    assert harness.get(out[4].id).priority == -5


@pytest.mark.parametrize(
    ("task", "args", "kw", "message"),
    [
        (tasks.add, {"a": 1, "b": datetime(2030, 1, 1, tzinfo=UTC)}, {}, "not JSON"),
        (tasks.add, {"a": 1, "b": {1, 2}}, {}, "not JSON"),
        (tasks.add, {"a": 1, "b": 2**70}, {}, "an integer beyond 64 bits"),
        ("tests.unknown.task", {"n": -(2**64)}, {}, "an integer beyond 64 bits"),
        (tasks.send_email, {"to": "\ud800"}, {}, "lone surrogate"),
        (tasks.add, {"a": 1}, {}, r"missing argument\(s\) b"),
        (tasks.add, {"a": 1, "b": 2, "c": 3}, {}, r"unexpected argument\(s\) c"),
        (tasks.noop, {"x": 1}, {}, r"unexpected argument\(s\) x"),
        (tasks.add, {"a": 1, "b": "2"}, {}, "b: input should be a valid integer"),
        ("tests.tasks.add", {"a": 1}, {}, r"missing argument\(s\) b"),
        (tasks.noop, None, {"delay": -1}, "delay"),
        (tasks.noop, None, {"queue": ""}, "queue name"),
        (tasks.noop, None, {"queue": "q" * 64}, "queue name"),
        (tasks.noop, None, {"max_attempts": 0}, "max_attempts"),
        (tasks.noop, None, {"run_at": datetime(2030, 1, 1)}, "timezone-aware"),  # noqa: DTZ001
        (tasks.noop, None, {"idempotency_key": ""}, "idempotency_key"),
    ],
)
def test_bad_input_is_an_enqueue_error_and_writes_nothing(
    harness: Harness, task: object, args: object, kw: dict[str, object], message: str
) -> None:
    with pytest.raises(pgq.EnqueueError, match=message) as caught:
        harness.enqueue(task, args, **kw)
    assert isinstance(caught.value, ValueError)
    assert pgq.list_jobs(harness.target, **harness.api) == []


def test_one_bad_spec_in_a_batch_writes_nothing(harness: Harness) -> None:
    specs = [pgq.JobSpec(task=tasks.noop), pgq.JobSpec(task=tasks.add, args={"a": "x", "b": 1})]
    with pytest.raises(pgq.EnqueueError, match=r"jobs\[1\]"):
        pgq.enqueue_many(harness.target, specs, **harness.api)
    assert pgq.list_jobs(harness.target, **harness.api) == []


def test_kwargs_tasks_accept_extra_args(harness: Harness) -> None:
    job = harness.enqueue(tasks.with_kwargs, {"a": 1, "extra": "yes"})
    assert harness.get(job.id).args == {"a": 1, "extra": "yes"}


# -- claim, complete, fail ---------------------------------------------------------------------


def test_claim_orders_by_priority_then_run_at_then_id(harness: Harness) -> None:
    low = harness.enqueue(tasks.noop, priority=5)
    first = harness.enqueue(tasks.noop)
    second = harness.enqueue(tasks.noop)
    urgent = harness.enqueue(tasks.noop, priority=-1)
    claimed = claim(harness, limit=10)
    assert [c.id for c in claimed] == [urgent.id, first.id, second.id, low.id] or sorted(
        (harness.get(c.id).priority, c.id) for c in claimed
    ) == [(-1, urgent.id), (0, first.id), (0, second.id), (5, low.id)]
    assert len(claimed) == 4


def test_claim_respects_the_limit_and_the_queue(harness: Harness) -> None:
    for _ in range(5):
        harness.enqueue(tasks.noop)
    harness.enqueue(tasks.noop, queue="other")
    assert len(claim(harness, limit=3)) == 3
    assert len(claim(harness, limit=3)) == 2
    assert claim(harness, limit=3) == []
    assert len(claim(harness, queue="other")) == 1


def test_claim_stamps_the_lease_and_records_the_event(harness: Harness) -> None:
    job = harness.enqueue(tasks.noop)
    [c] = claim(harness, worker="w-7")
    assert (c.id, c.attempt, c.worker_id) == (job.id, 1, "w-7")
    record = harness.get(job.id)
    assert (record.state, record.attempt, record.worker_id) == ("running", 1, "w-7")
    assert record.lease_expires_at is not None and record.lease_expires_at > record.created_at
    assert [(e.from_state, e.to_state, e.worker_id) for e in record.events][-1] == (
        "queued",
        "running",
        "w-7",
    )


def test_delayed_job_waits_until_due(harness: Harness) -> None:
    job = harness.enqueue(tasks.noop, delay=3600)
    assert claim(harness) == []
    harness.make_due(job.id)
    assert [c.id for c in claim(harness)] == [job.id]


def test_run_at_in_the_past_is_due_now(harness: Harness) -> None:
    job = harness.enqueue(tasks.noop, run_at=datetime(2020, 1, 1, tzinfo=UTC))
    assert [c.id for c in claim(harness)] == [job.id]


def test_complete_finishes_the_job(harness: Harness) -> None:
    job = harness.enqueue(tasks.noop)
    [c] = claim(harness)
    assert harness.backend.complete_many([c.lease]) == {c.lease}
    record = harness.get(job.id)
    assert record.state == "completed" and record.finished_at is not None
    assert record.lease_expires_at is None
    assert_history_follows_state_table(record)


def test_fail_retries_after_the_delay_then_dies(harness: Harness) -> None:
    job = harness.enqueue(tasks.noop, max_attempts=2)
    [c] = claim(harness)
    assert harness.backend.fail(c.lease, RetryIn(3600.0), error="RuntimeError: boom")
    record = harness.get(job.id)
    assert (record.state, record.last_error) == ("retrying", "RuntimeError: boom")
    assert claim(harness) == []  # backing off
    harness.make_due(job.id)
    [c2] = claim(harness)
    assert c2.attempt == 2
    assert harness.backend.fail(c2.lease, GiveUp("attempt 2 of 2 failed: boom"), error="boom")
    record = harness.get(job.id)
    assert (record.state, record.attempt) == ("dead", 2)
    assert record.last_error == "attempt 2 of 2 failed: boom"
    assert record.finished_at is not None
    assert [e.to_state for e in record.events] == [
        "queued",
        "running",
        "retrying",
        "running",
        "dead",
    ]
    assert record.events[2].error == "RuntimeError: boom"
    assert_history_follows_state_table(record)


# -- leases, reaper, fencing -------------------------------------------------------------------


def test_extend_leases_returns_only_leases_still_held(harness: Harness) -> None:
    a = harness.enqueue(tasks.noop)
    harness.enqueue(tasks.noop)
    c1, c2 = claim(harness)
    harness.expire_lease(a.id)
    assert harness.backend.reap_expired(limit=100, default_max_attempts=5) == {"default": 1}
    held = harness.backend.extend_leases([c1.lease, c2.lease], lease_s=30.0)
    assert held == {c for c in (c1.lease, c2.lease) if c.job_id != a.id}
    forged = Lease(c2.id, c2.attempt, "someone-else")
    assert harness.backend.extend_leases([forged], lease_s=30.0) == set()


def test_reaper_retries_then_dead_letters_and_names_the_worker(harness: Harness) -> None:
    job = harness.enqueue(tasks.noop, max_attempts=2)
    claim(harness, worker="w-gone")
    harness.expire_lease(job.id)
    assert harness.backend.reap_expired(limit=100, default_max_attempts=5) == {"default": 1}
    record = harness.get(job.id)
    assert record.state == "retrying"
    assert record.last_error is not None and "w-gone" in record.last_error
    assert "lease expired" in record.last_error and "last seen" in record.last_error
    assert record.events[-1].error == record.last_error
    [again] = claim(harness, worker="w2")  # runnable at once
    assert again.attempt == 2
    harness.expire_lease(job.id)
    assert harness.backend.reap_expired(limit=100, default_max_attempts=5) == {"default": 1}
    record = harness.get(job.id)
    assert record.state == "dead" and record.finished_at is not None
    assert_history_follows_state_table(record)


def test_reaper_uses_the_default_max_attempts_when_the_job_has_none(harness: Harness) -> None:
    job_id = harness.enqueue_raw("somewhere.else", "{}")
    claim(harness)
    harness.expire_lease(job_id)
    harness.backend.reap_expired(limit=100, default_max_attempts=1)
    assert harness.get(job_id).state == "dead"


def test_reaper_leaves_live_leases_alone(harness: Harness) -> None:
    harness.enqueue(tasks.noop)
    claim(harness)
    assert harness.backend.reap_expired(limit=100, default_max_attempts=5) == {}


def test_late_complete_after_reap_changes_nothing_and_is_recorded(harness: Harness) -> None:
    job = harness.enqueue(tasks.noop, max_attempts=3)
    [c] = claim(harness, worker="w1")
    harness.expire_lease(job.id)
    assert harness.backend.reap_expired(limit=100, default_max_attempts=5) == {"default": 1}
    assert harness.backend.complete_many([c.lease]) == set()
    record = harness.get(job.id)
    assert record.state == "retrying"
    late = record.events[-1]
    assert (late.to_state, late.from_state, late.worker_id) == ("discarded", "retrying", "w1")
    assert late.error is not None and "completed" in late.error


def test_late_failure_after_the_job_moved_on_is_recorded_only(harness: Harness) -> None:
    job = harness.enqueue(tasks.noop, max_attempts=3)
    [c1] = claim(harness, worker="w1")
    harness.expire_lease(job.id)
    harness.backend.reap_expired(limit=100, default_max_attempts=5)
    [c2] = claim(harness, worker="w2")
    assert harness.backend.fail(c1.lease, RetryIn(0.0), error="late boom") is False
    record = harness.get(job.id)
    assert (record.state, record.attempt, record.worker_id) == ("running", 2, "w2")
    assert record.events[-1].to_state == "discarded"
    assert record.events[-1].error is not None and "late boom" in record.events[-1].error
    assert harness.backend.complete_many([c2.lease]) == {c2.lease}
    assert harness.get(job.id).state == "completed"


def test_release_returns_unstarted_jobs_without_spending_an_attempt(harness: Harness) -> None:
    job = harness.enqueue(tasks.noop)
    [c] = claim(harness)
    assert harness.backend.release([c.lease]) == 1
    record = harness.get(job.id)
    assert (record.state, record.attempt) == ("queued", 0)
    assert record.events[-1].error == "released unstarted by worker shutdown"
    assert harness.backend.release([c.lease]) == 0  # fenced: nothing held any more
    assert claim(harness)[0].attempt == 1
    assert_history_follows_state_table(harness.get(job.id))


# -- inspect and replay ------------------------------------------------------------------------


def test_retry_and_cancel_follow_the_state_table(harness: Harness) -> None:
    job = harness.enqueue(tasks.noop, max_attempts=1)
    [c] = claim(harness)
    with pytest.raises(pgq.InvalidTransition, match="running"):
        pgq.cancel_job(harness.target, job.id, **harness.api)
    with pytest.raises(pgq.InvalidTransition):
        pgq.retry_job(harness.target, job.id, **harness.api)
    harness.backend.fail(c.lease, GiveUp("nope"), error="nope")
    replayed = pgq.retry_job(harness.target, job.id, **harness.api)
    assert (replayed.state, replayed.attempt, replayed.finished_at) == ("queued", 0, None)
    assert replayed.events[-1].from_state == "dead"
    cancelled = pgq.cancel_job(harness.target, job.id, **harness.api)
    assert cancelled.state == "cancelled" and cancelled.finished_at is not None
    assert claim(harness) == []
    assert pgq.retry_job(harness.target, job.id, **harness.api).state == "queued"
    assert_history_follows_state_table(harness.get(job.id))


def test_completed_jobs_cannot_be_replayed_or_cancelled(harness: Harness) -> None:
    job = harness.enqueue(tasks.noop)
    [c] = claim(harness)
    harness.backend.complete_many([c.lease])
    for action in (pgq.retry_job, pgq.cancel_job):
        with pytest.raises(pgq.InvalidTransition, match="completed"):
            action(harness.target, job.id, **harness.api)


def test_unknown_job_ids(harness: Harness) -> None:
    assert pgq.get_job(harness.target, 987654, **harness.api) is None
    with pytest.raises(pgq.JobNotFound):
        pgq.retry_job(harness.target, 987654, **harness.api)
    with pytest.raises(pgq.JobNotFound):
        pgq.cancel_job(harness.target, 987654, **harness.api)


def test_list_jobs_filters_newest_first(harness: Harness) -> None:
    a = harness.enqueue(tasks.noop)
    b = harness.enqueue(tasks.noop, queue="other")
    c = harness.enqueue(tasks.noop)
    claim(harness, limit=1)
    assert [r.id for r in pgq.list_jobs(harness.target, **harness.api)] == [c.id, b.id, a.id]
    assert [r.id for r in pgq.list_jobs(harness.target, queue="other", **harness.api)] == [b.id]
    assert [r.id for r in pgq.list_jobs(harness.target, state="running", **harness.api)] == [a.id]
    assert len(pgq.list_jobs(harness.target, limit=2, **harness.api)) == 2
    assert pgq.list_jobs(harness.target, state="running", **harness.api)[0].events
    with pytest.raises(ValueError, match="state must be one of"):
        pgq.list_jobs(harness.target, state="bogus", **harness.api)


def test_runnable_queues_and_next_due(harness: Harness) -> None:
    assert harness.backend.runnable_queues() == []
    assert harness.backend.next_due_in(["default"]) is None
    harness.enqueue(tasks.noop, queue="b", delay=60)
    harness.enqueue(tasks.noop, queue="a")
    assert harness.backend.runnable_queues() == ["a", "b"]
    due_b = harness.backend.next_due_in(["b"])
    assert due_b is not None and 50 < due_b <= 60
    due = harness.backend.next_due_in(["a", "b"])
    assert due is not None and due <= 0


def test_timestamps_come_from_the_backend_clock(harness: Harness) -> None:
    before = harness.enqueue(tasks.noop)
    record = harness.get(before.id)
    assert record.run_at == record.created_at
    delayed = harness.get(harness.enqueue(tasks.noop, delay=90).id)
    assert delayed.run_at - delayed.created_at == timedelta(seconds=90)


def test_claim_stamps_the_tasks_own_max_attempts_for_the_reaper(harness: Harness) -> None:
    job_id = harness.enqueue_raw("tests.tasks.always_fails", "{}")  # producer knew no task
    assert harness.get(job_id).max_attempts is None
    for attempt in (1, 2, 3):
        [c] = harness.backend.claim(
            worker_id="w",
            wants=[("default", 1)],
            lease_s=30.0,
            max_attempts={"tests.tasks.always_fails": 3},
        )
        assert c.attempt == attempt and c.max_attempts == 3
        harness.expire_lease(job_id)
        harness.backend.reap_expired(limit=10, default_max_attempts=10)
    record = harness.get(job_id)
    assert (record.state, record.attempt, record.max_attempts) == ("dead", 3, 3)


@pytest.mark.parametrize("n", [1, 2, 500])
def test_enqueue_many_without_keys_maps_each_result_to_its_input(harness: Harness, n: int) -> None:
    specs = [pgq.JobSpec(task=tasks.add, args={"a": i, "b": -i}, priority=i % 3) for i in range(n)]
    out = pgq.enqueue_many(harness.target, specs, **harness.api)
    assert [e.created for e in out] == [True] * n
    assert len({e.id for e in out}) == n
    for i in (0, n // 2, n - 1):
        record = harness.get(out[i].id)
        assert (record.args, record.priority) == ({"a": i, "b": -i}, i % 3)
        assert [e.to_state for e in record.events] == ["queued"]
