"""pgq, through its public API only (DESIGN.md), run with pgq's own environment.

Producers use ``pgq.enqueue`` / ``pgq.enqueue_many`` with the task objects from
``benchmarks.pgq_tasks`` (so args are validated, as in an application); workers are
``pgq.Worker(dsn, tasks=["benchmarks.pgq_tasks"], concurrency=...)``, drained with
``run_until_empty(max_wait=0.0)`` or served with ``run()`` until SIGTERM. A finished job has
``state = 'completed'`` in ``pgq.jobs``: that is what the orchestrator counts.

The repository root must be importable (the orchestrator sets PYTHONPATH).
"""

from __future__ import annotations

import time

import psycopg
from _common import Args, emit, paced, parse_args, sleep_until, wait_for_go

import pgq
from benchmarks import pgq_tasks

TASK_MODULES = ["benchmarks.pgq_tasks"]


@pgq.task(name="benchmarks.peers.pgq_driver.noop_typed")
def noop_typed(i: int = -1, t: float = 0.0) -> None:
    """Typed parameters, as users' tasks have: enqueue checks args against them."""


def enqueue_one(dsn: str, n: int) -> None:
    # Each enqueue is one statement on an autocommit connection, so its own transaction: the
    # same shape as PGQueuer's `queries.enqueue`, which runs one autocommitted statement.
    with psycopg.connect(dsn, autocommit=True) as conn:
        start = time.perf_counter()
        for _ in range(n):
            pgq.enqueue(conn, pgq_tasks.noop, {})
        emit(jobs=n, seconds=time.perf_counter() - start)


def enqueue_bulk(dsn: str, n: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        start = time.perf_counter()
        with conn.transaction():
            pgq.enqueue_many(conn, [pgq.JobSpec(task=pgq_tasks.noop, args={}) for _ in range(n)])
        emit(jobs=n, seconds=time.perf_counter() - start)


def enqueue_bulk_typed(dsn: str, n: int, *, with_args: bool) -> None:
    # The specs are built inside the timed region, as an application builds them.
    with psycopg.connect(dsn, autocommit=True) as conn:
        start = time.perf_counter()
        with conn.transaction():
            if with_args:
                specs = [pgq.JobSpec(task=noop_typed, args={"i": k, "t": k / 2}) for k in range(n)]
            else:
                specs = [pgq.JobSpec(task=noop_typed, args={}) for _ in range(n)]
            pgq.enqueue_many(conn, specs)
        emit(jobs=n, seconds=time.perf_counter() - start)


def drain_worker(dsn: str, concurrency: int) -> None:
    worker = pgq.Worker(dsn, tasks=TASK_MODULES, concurrency=concurrency)
    wait_for_go()
    worker.run_until_empty(max_wait=0.0)
    emit(done=True)


def serve_worker(dsn: str, concurrency: int) -> None:
    worker = pgq.Worker(dsn, tasks=TASK_MODULES, concurrency=concurrency)
    emit(ready=True)
    worker.run()


def latency_enqueue(dsn: str, n: int, interval: float) -> None:
    t0: list[float] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        for i, deadline in paced(n, interval):
            sleep_until(deadline)
            t0.append(time.time())
            pgq.enqueue(conn, pgq_tasks.stamp, {"i": i})  # autocommit: its own transaction
    emit(t0=t0)


def main(args: Args) -> None:
    if args.command == "setup":
        pgq.migrate(args.dsn)
        emit(ok=True)
    elif args.command == "enqueue-one":
        enqueue_one(args.dsn, args.n)
    elif args.command in ("enqueue-bulk", "prefill"):
        enqueue_bulk(args.dsn, args.n)
    elif args.command == "enqueue-bulk-typed":
        enqueue_bulk_typed(args.dsn, args.n, with_args=False)
    elif args.command == "enqueue-bulk-typed-args":
        enqueue_bulk_typed(args.dsn, args.n, with_args=True)
    elif args.command == "drain-worker":
        drain_worker(args.dsn, args.concurrency)
    elif args.command == "serve-worker":
        serve_worker(args.dsn, args.concurrency)
    elif args.command == "latency-enqueue":
        latency_enqueue(args.dsn, args.n, args.interval)


if __name__ == "__main__":
    main(parse_args())
