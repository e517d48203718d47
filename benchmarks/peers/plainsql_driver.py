"""The floor: a job queue in plain psycopg SQL, no library.

One table, a partial index over runnable rows, claims of 100 rows with
``FOR UPDATE SKIP LOCKED``, completion of a whole batch in one statement, bulk enqueue with
COPY, LISTEN/NOTIFY for pickup. No events, no leases, no retries: the least a PostgreSQL queue
can do per job, measured with the same harness as the libraries.

With ``PLAIN_CONTRACT=full`` (the "plain SQL, full contract" column) the same loop also keeps
pgq's promises in SQL: each claim stamps attempt, worker and lease and writes a `running` event
per job; each completion is fenced on (id, attempt, worker, state) and writes a `completed`
event; every enqueued job gets its `queued` event. Still one thread, no task hand-off: what
the contract costs the database, with no Python framework around it.
"""

from __future__ import annotations

import json
import os
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

FULL = os.environ.get("PLAIN_CONTRACT") == "full"
if FULL:
    SCHEMA = f"""
create table plain_jobs (
    id bigserial primary key,
    queue text not null default 'default',
    task text not null,
    args jsonb not null default '{{}}',
    state text not null default 'queued',
    attempt int not null default 0,
    worker_id text,
    lease_expires_at timestamptz,
    run_at timestamptz not null default now(),
    created_at timestamptz not null default now(),
    finished_at timestamptz
);
create index plain_jobs_runnable on plain_jobs (queue, run_at, id) where state = 'queued';
create index plain_jobs_lease on plain_jobs (lease_expires_at) where lease_expires_at is not null;
create table plain_events (
    job_id bigint not null,
    id bigserial not null,
    from_state text,
    to_state text not null,
    attempt int not null,
    worker_id text,
    at timestamptz not null default now(),
    primary key (job_id, id)
);
create function plain_jobs_notify() returns trigger language plpgsql as $$
begin
    perform pg_notify('{CHANNEL}', '');
    return null;
end $$;
create trigger plain_jobs_notify after insert on plain_jobs
    for each statement execute function plain_jobs_notify();
"""
    ENQUEUE = """
with j as (insert into plain_jobs (task, args) values (%s, %s) returning id)
insert into plain_events (job_id, to_state, attempt) select id, 'queued', 0 from j
"""
    CLAIM = f"""
with picked as materialized (
    select id from plain_jobs
    where queue = 'default' and state = 'queued' and run_at <= now()
    order by run_at, id
    limit {BATCH}
    for update skip locked
),
claimed as (
    update plain_jobs j
       set state = 'running', attempt = j.attempt + 1, worker_id = 'w1',
           lease_expires_at = now() + interval '30 seconds'
     where j.id = any(array(select id from picked))
 returning j.id, j.task, j.args, j.attempt
),
logged as (
    insert into plain_events (job_id, from_state, to_state, attempt, worker_id)
    select id, 'queued', 'running', attempt, 'w1' from claimed
)
select id, task, args, attempt from claimed
"""
    COMPLETE = """
with done as (
    update plain_jobs j
       set state = 'completed', finished_at = now(), lease_expires_at = null
     where j.id = any(%(ids)s)
       and j.attempt = (%(attempts)s::int[])[array_position(%(ids)s, j.id)]
       and j.worker_id = 'w1' and j.state = 'running'
 returning j.id, j.attempt
)
insert into plain_events (job_id, from_state, to_state, attempt, worker_id)
select id, 'running', 'completed', attempt, 'w1' from done
"""

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
        if FULL:  # its queued events, in the same transaction in a real system
            conn.execute(
                "insert into plain_events (job_id, to_state, attempt)"
                " select id, 'queued', 0 from plain_jobs"
            )
        emit(jobs=n, seconds=time.perf_counter() - start)


def enqueue_bulk_typed(dsn: str, n: int, *, with_args: bool) -> None:
    """The floor for a typed bulk enqueue: no signature check, each row's args serialized with
    the standard library's json inside the timed region, then the same COPY as enqueue_bulk."""
    with connect(dsn) as conn:
        start = time.perf_counter()
        with (
            conn.transaction(),
            conn.cursor().copy("copy plain_jobs (task, args) from stdin") as copy,
        ):
            for k in range(n):
                args = {"i": k, "t": k / 2} if with_args else {}
                copy.write_row(("noop_typed", json.dumps(args)))
        if FULL:
            conn.execute(
                "insert into plain_events (job_id, to_state, attempt)"
                " select id, 'queued', 0 from plain_jobs"
            )
        emit(jobs=n, seconds=time.perf_counter() - start)


def run_batch(conn: psycopg.Connection[Any]) -> int:
    """Claim up to BATCH jobs, run them, complete them; returns how many were claimed."""
    rows = conn.execute(CLAIM).fetchall()
    if not rows:
        return 0
    done = []
    if FULL:
        attempts = []
        for job_id, task, args, attempt in rows:
            TASKS[task](**args)
            done.append(job_id)
            attempts.append(attempt)
        conn.execute(COMPLETE, {"ids": done, "attempts": attempts})
        return len(rows)
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
    elif args.command == "enqueue-bulk-typed":
        enqueue_bulk_typed(args.dsn, args.n, with_args=False)
    elif args.command == "enqueue-bulk-typed-args":
        enqueue_bulk_typed(args.dsn, args.n, with_args=True)
    elif args.command == "drain-worker":
        drain_worker(args.dsn)
    elif args.command == "serve-worker":
        serve_worker(args.dsn)
    elif args.command == "latency-enqueue":
        latency_enqueue(args.dsn, args.n, args.interval)


if __name__ == "__main__":
    main(parse_args())
