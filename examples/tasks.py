"""The tasks the examples enqueue and run.

A worker runs tasks by importing their module, so tasks live in a module of their own, here
`tasks` (the examples put this directory on `sys.path`). A worker process outside the examples
would run them with, from this directory:

    PGQ_DSN=postgresql://localhost/app pgq worker tasks --schema pgq_example_psycopg

Running this file itself only lists the tasks it defines:

    python examples/tasks.py
"""

from __future__ import annotations

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


if __name__ == "__main__":
    import tasks  # this file again, under the module name jobs store (not "__main__")

    for t in (tasks.send_receipt, tasks.ask_for_review):
        print(f"{t.name}: queue={t.queue!r}, max_attempts={t.max_attempts}, timeout={t.timeout}")
