"""The "orders" app on SQLAlchemy 2: enqueue with a Session, in the Session's transaction.

Run it from the repository root, with a PostgreSQL you may create tables in:

    PGQ_DSN=postgresql://user:pw@localhost:5432/app .venv/bin/python examples/sqlalchemy_app.py
    .venv/bin/python examples/sqlalchemy_app.py postgresql://user:pw@localhost:5432/app

pgq needs SQLAlchemy's psycopg (3) driver, so the engine URL starts with `postgresql+psycopg://`;
this script turns a `postgresql://` (or `postgres://`) URL into one. It creates the table
`pgq_example_sqlalchemy_orders` and pgq's tables in the schema `pgq_example_sqlalchemy` (both
are left in place), then:

1. adds an order and enqueues `send_receipt` in one Session transaction, which commits;
2. does the same in a Session that rolls back: neither the order nor the job exists;
3. enqueues on a SQLAlchemy Connection (`engine.begin()`), the Core way;
4. runs a worker in burst mode until the queue is empty, and prints the first job's timeline.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import pgq

sys.path.insert(0, str(Path(__file__).resolve().parent))  # so the worker can import `tasks`
from tasks import send_receipt

SCHEMA = "pgq_example_sqlalchemy"


class Base(DeclarativeBase):
    pass


class Order(Base):
    __tablename__ = "pgq_example_sqlalchemy_orders"

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    email: Mapped[str]
    total_cents: Mapped[int]


def sqlalchemy_url(dsn: str) -> str:
    """`postgresql://...` -> `postgresql+psycopg://...`: SQLAlchemy's psycopg 3 driver."""
    for prefix in ("postgresql://", "postgres://"):
        if dsn.startswith(prefix):
            return "postgresql+psycopg://" + dsn.removeprefix(prefix)
    return dsn  # already names a driver


def place_order(session: Session, email: str, total_cents: int) -> tuple[int, int]:
    """Add an order and enqueue its receipt, in the session's transaction; return both ids."""
    order = Order(email=email, total_cents=total_cents)
    session.add(order)
    session.flush()  # the INSERT runs now, so the order has its id
    job = pgq.enqueue(
        session,
        send_receipt,
        {"order_id": order.id, "email": email},
        idempotency_key=f"receipt-{order.id}",
        schema=SCHEMA,
    )
    return order.id, job.id


def main() -> None:
    dsn = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("PGQ_DSN")
    if not dsn:
        sys.exit("set PGQ_DSN or pass a DSN as the first argument")
    if "://" not in dsn:
        sys.exit("this example needs a URL DSN (postgresql://...), not key=value pairs")

    pgq.migrate(dsn, schema=SCHEMA)
    engine = sa.create_engine(sqlalchemy_url(dsn))
    Base.metadata.create_all(engine)

    # 1. Committed: session.begin() commits when the block ends without an exception.
    with Session(engine) as session, session.begin():
        order_id, job_id = place_order(session, "ada@example.com", 4200)
    print(f"order {order_id} committed with receipt job {job_id}")

    # 2. Rolled back: the job goes with the order.
    with Session(engine) as session:
        lost_order, lost_job = place_order(session, "bob@example.com", 999)
        session.rollback()
        assert session.get(Order, lost_order) is None
        assert pgq.get_job(session, lost_job, schema=SCHEMA) is None
    print(f"order {lost_order} rolled back: job {lost_job} does not exist")

    # 3. The same with a Core Connection; the same key in the same queue returns the same job.
    with engine.begin() as conn:
        again = pgq.enqueue(
            conn,
            "tasks.send_receipt",  # by dotted name: a producer need not import the task's code
            {"order_id": order_id, "email": "ada@example.com"},
            idempotency_key=f"receipt-{order_id}",
            schema=SCHEMA,
        )
    assert again.id == job_id
    assert not again.created
    print(f"enqueue again with key receipt-{order_id}: job {again.id}, created={again.created}")

    # 4. Drain, then read the job back through a Session.
    pgq.Worker(dsn, tasks=["tasks"], queues=["receipts"], schema=SCHEMA).run_until_empty(
        max_wait=1.0
    )
    with Session(engine) as session:
        job = pgq.get_job(session, job_id, schema=SCHEMA)
    assert job is not None
    assert job.state == "completed", job
    print(f"job {job.id} ({job.task}): {job.state} after {job.attempt} attempts")
    for event in job.events:
        error = f"  {event.error}" if event.error else ""
        print(
            f"  {event.at:%H:%M:%S.%f}  {event.from_state or '-':>8} -> {event.to_state:<9}"
            f"  attempt {event.attempt}{error}"
        )
    engine.dispose()


if __name__ == "__main__":
    main()
