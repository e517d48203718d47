"""Unit tests of an app's enqueueing code on pgq's in-memory backend: no PostgreSQL needed.

Run it with pytest, or as a script (it then runs each test and prints its name):

    .venv/bin/python -m pytest examples/testing_example.py
    .venv/bin/python examples/testing_example.py

`InMemoryBackend` goes wherever pgq takes a connection or DSN. It has the same states,
transitions, fencing and retry rules as PostgreSQL, but no transactions: an enqueue is visible at
once and nothing rolls back, so test the transactional part against PostgreSQL. Its clock plays
the database's now(); a `FrozenClock` moves only when told, so run_at values are exact.
"""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

import pytest

import pgq
from pgq.testing import FrozenClock, InMemoryBackend, assert_enqueued

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tasks import ask_for_review, send_receipt

WEEK = 7 * 86400.0


# -- the application code under test -----------------------------------------------------------


def checkout(target: object, order_id: int, email: str) -> None:
    """What the app runs when an order is paid (in production `target` is its connection)."""
    args = {"order_id": order_id, "email": email}
    pgq.enqueue(target, send_receipt, args, idempotency_key=f"receipt-{order_id}")
    pgq.enqueue(target, ask_for_review, args, delay=WEEK, idempotency_key=f"review-{order_id}")


# -- the tests ---------------------------------------------------------------------------------


def test_checkout_enqueues_one_receipt_even_when_retried() -> None:
    backend = InMemoryBackend()
    checkout(backend, 7, "ada@example.com")
    checkout(backend, 7, "ada@example.com")  # a client retrying the request: same keys
    assert_enqueued(
        backend,
        send_receipt,
        args={"order_id": 7, "email": "ada@example.com"},
        queue="receipts",
        count=1,
    )


def test_receipt_is_retried_then_sent() -> None:
    backend = InMemoryBackend(clock=FrozenClock())
    checkout(backend, 7, "ada@example.com")
    # Runs every job to a terminal state, retries included, jumping the clock to each due time
    # instead of sleeping (so the review due in a week runs too). Returns the attempts it ran.
    attempts = backend.run_until_empty(tasks=["tasks"])
    assert attempts == 3  # the receipt's failed first attempt, its retry, the review
    [receipt] = assert_enqueued(backend, send_receipt, state="completed")
    assert [e.to_state for e in receipt.events] == [
        "queued", "running", "retrying", "running", "completed",
    ]  # fmt: skip
    assert receipt.events[2].error is not None
    assert receipt.events[2].error.startswith("ConnectionError: mail server busy")


def test_review_request_waits_a_week() -> None:
    clock = FrozenClock()
    backend = InMemoryBackend(clock=clock)
    checkout(backend, 7, "ada@example.com")
    [review] = assert_enqueued(backend, ask_for_review, state="queued")
    assert review.run_at == clock.now() + timedelta(days=7)

    # A real worker runs on the in-memory backend too; max_wait=0: return once nothing is due.
    worker = pgq.Worker(backend, tasks=["tasks"], queues=["reviews"], poll_interval=0.01)
    worker.run_until_empty(max_wait=0)
    assert_enqueued(backend, ask_for_review, state="queued")  # six days early: not run

    clock.advance(WEEK)
    pgq.Worker(backend, tasks=["tasks"], queues=["reviews"], poll_interval=0.01).run_until_empty(
        max_wait=0
    )
    assert_enqueued(backend, ask_for_review, state="completed")


def test_assert_enqueued_lists_what_was_enqueued_when_nothing_matches() -> None:
    backend = InMemoryBackend()
    checkout(backend, 7, "ada@example.com")
    with pytest.raises(AssertionError, match=r"'order_id': 7") as failure:
        assert_enqueued(backend, send_receipt, args={"order_id": 8, "email": "ada@example.com"})
    print(failure.value)


if __name__ == "__main__":
    for name, test in list(globals().items()):
        if name.startswith("test_") and callable(test):
            test()
            print(f"ok  {name}")
