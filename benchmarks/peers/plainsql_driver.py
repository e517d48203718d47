"""The floor: a job queue in plain psycopg SQL, no library.

One table, a partial index over runnable rows, claims of 100 rows with
``FOR UPDATE SKIP LOCKED``, completion of a whole batch in one statement, bulk enqueue with
COPY, LISTEN/NOTIFY for pickup. No events, no leases, no retries: the least a PostgreSQL queue
can do per job, measured with the same harness as the libraries.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from typing import Any

import psycopg
from _common import Args, Stamper, emit, paced, parse_args, sleep_until, wait_for_go
from psycopg.types.json import Jsonb

CHANNEL = "plain_jobs"
BATCH = 100

SCHEMA = f"""
create table plain_jobs (
    id bigserial primary key,
    queue text not null default 'default',
    task text not null,
    args jsonb not null default '{{}}',
    state text not null default 'queued',
    run_at timestamptz not null default now(),
    created_at timestamptz not null default now(),
    finished_at timestamptz
);
create index plain_jobs_runnable on plain_jobs (queue, run_at, id) where state = 'queued';
create function plain_jobs_notify() returns trigger language plpgsql as $$
begin
    perform pg_notify('{CHANNEL}', '');
    return null;
end $$;
create trigger plain_jobs_notify after insert on plain_jobs
    for each statement execute function plain_jobs_notify();
"""

ENQUEUE = "insert into plain_jobs (task, args) values (%s, %s)"

CLAIM = f"""
update plain_jobs j set state = 'running'
from (
    select id from plain_jobs
    where queue = 'default' and state = 'queued' and run_at <= now()
    order by run_at, id
    limit {BATCH}
    for update skip locked
) c
where j.id = c.id
returning j.id, j.task, j.args
"""

COMPLETE = "update plain_jobs set state = 'completed', finished_at = now() where id = any(%s)"

stamper = Stamper()


def noop() -> None:
    pass


def stamp(i: int) -> None:
    stamper(i)


TASKS: dict[str, Callable[..., None]] = {"noop": noop, "stamp": stamp}


def connect(dsn: str) -> psycopg.Connection[Any]:
    return psycopg.connect(dsn, autocommit=True)


def enqueue_one(dsn: str, n: int) -> None:
    args = Jsonb({})
    with connect(dsn) as conn:
        start = time.perf_counter()
        for _ in range(n):  # autocommit: each statement its own transaction, as the others
            conn.execute(ENQUEUE, ("noop", args))
        emit(jobs=n, seconds=time.perf_counter() - start)


def enqueue_bulk(dsn: str, n: int) -> None:
    with connect(dsn) as conn:
        start = time.perf_counter()
        with (
            conn.transaction(),
            conn.cursor().copy("copy plain_jobs (task, args) from stdin") as copy,
        ):
            for _ in range(n):
                copy.write_row(("noop", "{}"))
        emit(jobs=n, seconds=time.perf_counter() - start)


def run_batch(conn: psycopg.Connection[Any]) -> int:
    """Claim up to BATCH jobs, run them, complete them; returns how many were claimed."""
    rows = conn.execute(CLAIM).fetchall()
    if not rows:
        return 0
    done = []
    for job_id, task, args in rows:
        TASKS[task](**args)
        done.append(job_id)
    conn.execute(COMPLETE, (done,))
    return len(rows)


def drain_worker(dsn: str) -> None:
    with connect(dsn) as conn:
        conn.execute("select 1")
        wait_for_go()
        while run_batch(conn):
            pass
        emit(done=True)


def serve_worker(dsn: str) -> None:
    stopping = False

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    with connect(dsn) as conn:
        conn.execute(f"listen {CHANNEL}")
        emit(ready=True)
        while not stopping:
            while run_batch(conn):
                pass
            # Pending notifications are buffered on the connection, so none is missed
            # between the empty claim above and this wait.
            for _ in conn.notifies(timeout=0.5, stop_after=1):
                pass


def latency_enqueue(dsn: str, n: int, interval: float) -> None:
    t0: list[float] = []
    with connect(dsn) as conn:
        for i, deadline in paced(n, interval):
            sleep_until(deadline)
            t0.append(time.time())
            conn.execute(ENQUEUE, ("stamp", Jsonb({"i": i})))  # autocommit: its own transaction
    emit(t0=t0)


def main(args: Args) -> None:
    if args.command == "setup":
        with connect(args.dsn) as conn:
            conn.execute(SCHEMA)
        emit(ok=True)
    elif args.command == "enqueue-one":
        enqueue_one(args.dsn, args.n)
    elif args.command in ("enqueue-bulk", "prefill"):
        enqueue_bulk(args.dsn, args.n)
    elif args.command == "drain-worker":
        drain_worker(args.dsn)
    elif args.command == "serve-worker":
        serve_worker(args.dsn)
    elif args.command == "latency-enqueue":
        latency_enqueue(args.dsn, args.n, args.interval)


if __name__ == "__main__":
    main(parse_args())
