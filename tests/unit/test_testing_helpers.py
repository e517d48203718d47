"""pgq.testing, as users call it: it must pass when it should and fail when it should."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

import pgq
from pgq.testing import FrozenClock, InMemoryBackend, assert_enqueued, run_until_empty
from tests import tasks


def test_assert_enqueued_matches_task_and_args() -> None:
    backend = InMemoryBackend()
    pgq.enqueue(backend, tasks.send_email, {"to": "a@b.c", "subject": "hi"})
    [job] = assert_enqueued(backend, tasks.send_email, args={"to": "a@b.c", "subject": "hi"})
    assert job.queue == "emails"
    assert_enqueued(backend, "tests.tasks.send_email", queue="emails", count=1)


def test_assert_enqueued_fails_listing_what_was_enqueued() -> None:
    backend = InMemoryBackend()
    pgq.enqueue(backend, tasks.send_email, {"to": "a@b.c"})
    with pytest.raises(AssertionError) as caught:
        assert_enqueued(backend, tasks.send_email, args={"to": "someone@else"})
    message = str(caught.value)
    assert "tests.tasks.send_email" in message and "'to': 'a@b.c'" in message
    with pytest.raises(AssertionError, match=r"\(nothing\)"):
        assert_enqueued(InMemoryBackend(), tasks.noop)
    with pytest.raises(AssertionError, match="expected 2"):
        assert_enqueued(backend, tasks.send_email, count=2)


def test_run_until_empty_runs_retries_and_moves_the_clock() -> None:
    clock = FrozenClock(datetime(2030, 1, 1, tzinfo=UTC))
    backend = InMemoryBackend(clock=clock)
    ok = pgq.enqueue(backend, tasks.fails_until, {"attempt": 2})
    dead = pgq.enqueue(backend, tasks.always_fails)
    later = pgq.enqueue(backend, tasks.noop, delay=86_400)
    runs = run_until_empty(backend, tasks=["tests.tasks"])
    assert runs == 2 + 3 + 1
    assert pgq.get_job(backend, ok.id).state == "completed"  # type: ignore[union-attr]
    assert pgq.get_job(backend, dead.id).state == "dead"  # type: ignore[union-attr]
    assert pgq.get_job(backend, later.id).state == "completed"  # type: ignore[union-attr]
    assert clock.now() >= datetime(2030, 1, 2, tzinfo=UTC)  # jumped, did not sleep


def test_frozen_clock_only_moves_when_told() -> None:
    clock = FrozenClock()
    start = clock.now()
    assert clock.now() == start
    clock.advance(60.0)
    assert (clock.now() - start).total_seconds() == 60.0
    with pytest.raises(ValueError, match="forward"):
        clock.advance(-1)


def test_delayed_jobs_follow_the_backend_clock() -> None:
    backend = InMemoryBackend(clock=FrozenClock())
    job = pgq.enqueue(backend, tasks.noop, delay=60)
    assert backend.claim(worker_id="w", wants=[("default", 1)], lease_s=30) == []
    backend.clock.advance(60.0)
    assert [c.id for c in backend.claim(worker_id="w", wants=[("default", 1)], lease_s=30)] == [
        job.id
    ]
