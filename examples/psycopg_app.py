"""An "orders" app on psycopg 3: the order row and its receipt job commit together, or not at all.

Run it from the repository root, with a PostgreSQL you may create tables in:

    PGQ_DSN=postgresql://user:pw@localhost:5432/app .venv/bin/python examples/psycopg_app.py
    .venv/bin/python examples/psycopg_app.py postgresql://user:pw@localhost:5432/app

It creates the table `pgq_example_psycopg_orders` and pgq's tables in the schema
`pgq_example_psycopg` (both are left in place; running it again adds new orders), then:

1. inserts an order and enqueues `send_receipt` in one transaction, which commits;
2. does the same in a transaction that rolls back: neither the order nor the job exists;
3. runs a worker in burst mode until the queue is empty (the first attempt fails on purpose);
4. prints the job's timeline, as `pgq jobs show ID --schema pgq_example_psycopg` would.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import psycopg

import pgq

sys.path.insert(0, str(Path(__file__).resolve().parent))  # so the worker can import `tasks`
from tasks import send_receipt

SCHEMA = "pgq_example_psycopg"


class PaymentDeclined(Exception):
    pass


def place_order(conn: psycopg.Connection, email: str, total_cents: int) -> tuple[int, int]:
    """Insert an order and enqueue its receipt, in the caller's transaction; return both ids."""
    [order_id] = conn.execute(
        "insert into pgq_example_psycopg_orders (email, total_cents) values (%s, %s) returning id",
        (email, total_cents),
    ).fetchone()
    job = pgq.enqueue(
        conn,
        send_receipt,
        {"order_id": order_id, "email": email},
        idempotency_key=f"receipt-{order_id}",  # a second enqueue for this order returns this job
        schema=SCHEMA,
    )
    return order_id, job.id


def main() -> None:
    dsn = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("PGQ_DSN")
    if not dsn:
        sys.exit("set PGQ_DSN or pass a DSN as the first argument")

    pgq.migrate(dsn, schema=SCHEMA)  # creates or upgrades pgq's tables; safe to run every time
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "create table if not exists pgq_example_psycopg_orders ("
            " id bigint generated always as identity primary key,"
            " email text not null, total_cents int not null)"
        )

        # 1. Committed: the order and its job exist together.
        with conn.transaction():
            order_id, job_id = place_order(conn, "ada@example.com", 4200)
        print(f"order {order_id} committed with receipt job {job_id}")

        # 2. Rolled back: the job never existed, so no receipt for an order that never was.
        try:
            with conn.transaction():
                lost_order, lost_job = place_order(conn, "bob@example.com", 999)
                raise PaymentDeclined("card declined")
        except PaymentDeclined:
            pass
        assert pgq.get_job(conn, lost_job, schema=SCHEMA) is None
        print(f"order {lost_order} rolled back: job {lost_job} does not exist")

    # 3. A worker in burst mode: runs what is due and returns once the queue stays empty for
    #    max_wait seconds. The retry after the failed first attempt is due within 0.2 s.
    worker = pgq.Worker(dsn, tasks=["tasks"], queues=["receipts"], schema=SCHEMA)
    worker.run_until_empty(max_wait=1.0)

    # 4. What happened to the job, from its event rows.
    job = pgq.get_job(dsn, job_id, schema=SCHEMA)
    assert job is not None
    assert job.state == "completed", job
    print(f"job {job.id} ({job.task}): {job.state} after {job.attempt} attempts")
    for event in job.events:
        error = f"  {event.error}" if event.error else ""
        print(
            f"  {event.at:%H:%M:%S.%f}  {event.from_state or '-':>8} -> {event.to_state:<9}"
            f"  attempt {event.attempt}{error}"
        )


if __name__ == "__main__":
    main()
