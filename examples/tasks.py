"""The tasks the examples enqueue and run.

A worker runs tasks by importing their module, so tasks live in a module of their own, here
`tasks` (the examples put this directory on `sys.path`). A worker process outside the examples
would run them with, from this directory:

    PGQ_DSN=postgresql://localhost/app pgq worker tasks --schema pgq_example_psycopg

Running this file itself only lists the tasks it defines:

    python examples/tasks.py
"""

from __future__ import annotations

import threading
import time

import pgq


@pgq.task(queue="receipts", max_attempts=3, backoff=pgq.Backoff(base=0.05, cap=0.2), timeout=10.0)
def send_receipt(order_id: int, email: str, ctx: pgq.Context) -> None:
    """Email the receipt of an order. The first attempt fails on purpose, so that the job's
    timeline shows a retry; the second succeeds."""
    if ctx.attempt == 1:
        raise ConnectionError("mail server busy (this first attempt fails on purpose)")
    print(f"  [worker] sent the receipt of order {order_id} to {email} (attempt {ctx.attempt})")


@pgq.task(queue="reviews")
def ask_for_review(order_id: int, email: str) -> None:
    """Ask the customer to review an order; enqueued with a delay of a week."""
    print(f"  [worker] asked {email} to review order {order_id}")


# -- examples/queues_app.py: a capped, rate-limited queue and a flaky partner API --------------

# What the thumbnail jobs saw, for the example to check the queue's cap and rate against. The
# worker runs in the example's process, so these are the same objects the example reads.
thumbnail_starts: list[float] = []  # time.monotonic() at each start
thumbnail_peak = 0  # the most thumbnail jobs that ran at once
_thumbnails_running = 0
_lock = threading.Lock()

# The partner API behind the "webhooks" queue refuses every call until this time.monotonic()
# value; the example sets it (tasks imported by a worker process of their own never fail).
partner_down_until = 0.0


@pgq.task(queue="thumbnails")
def make_thumbnail(image_id: int) -> None:
    """Resize an image: 50 ms of work. The queue's policy caps and paces these."""
    global _thumbnails_running, thumbnail_peak
    with _lock:
        thumbnail_starts.append(time.monotonic())
        _thumbnails_running += 1
        thumbnail_peak = max(thumbnail_peak, _thumbnails_running)
    try:
        time.sleep(0.05)
    finally:
        with _lock:
            _thumbnails_running -= 1


@pgq.task(queue="webhooks")
def notify_partner(order_id: int) -> None:
    """POST an order to a partner's API, which is down for a while (see partner_down_until)."""
    if time.monotonic() < partner_down_until:
        raise ConnectionError("partner API refused the connection")
    time.sleep(0.01)


if __name__ == "__main__":
    import tasks  # this file again, under the module name jobs store (not "__main__")

    for t in (tasks.send_receipt, tasks.ask_for_review, tasks.make_thumbnail, tasks.notify_partner):
        print(f"{t.name}: queue={t.queue!r}, max_attempts={t.max_attempts}, timeout={t.timeout}")
