"""Concurrency claims, raced for real: threads on their own connections, many iterations."""

from __future__ import annotations

import threading

import pytest

import pgq
from tests.postgres import PgSchema


@pytest.mark.timeout(120)
def test_no_job_is_claimed_twice(pg_schema: PgSchema) -> None:
    ids = pg_schema.enqueue_noops(2_000)
    start = threading.Barrier(8)
    got: dict[int, list[int]] = {n: [] for n in range(8)}  # one list per thread: nothing shared

    def claimer(n: int) -> None:
        backend = pg_schema.new_backend()
        try:
            start.wait()
            while batch := backend.claim(worker_id=f"w{n}", wants=[("default", 7)], lease_s=30.0):
                got[n].extend(c.id for c in batch)
        finally:
            backend.close()

    threads = [threading.Thread(target=claimer, args=(n,), name=f"claimer-{n}") for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    claimed = sorted(i for per_thread in got.values() for i in per_thread)
    assert claimed == sorted(ids)  # each exactly once
    assert sum(1 for per_thread in got.values() if per_thread) >= 2  # they really raced
    [(running_events,)] = pg_schema.sql(
        "select count(*) from {schema}.job_events where to_state = 'running'"
    )
    assert running_events == 2_000


@pytest.mark.timeout(120)
def test_idempotent_enqueue_races_to_one_job(pg_schema: PgSchema) -> None:
    for round_ in range(20):
        start = threading.Barrier(6)
        results: dict[int, pgq.Enqueued] = {}

        def producer(
            n: int,
            key: str = f"order-{round_}",
            start: threading.Barrier = start,
            results: dict[int, pgq.Enqueued] = results,
        ) -> None:
            with pg_schema.connect() as conn:
                start.wait()
                with conn.transaction():
                    results[n] = pgq.enqueue(
                        conn, "tests.tasks.noop", idempotency_key=key, schema=pg_schema.schema
                    )

        threads = [threading.Thread(target=producer, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len({r.id for r in results.values()}) == 1, results
        assert sum(r.created for r in results.values()) == 1, results
    [(n,)] = pg_schema.sql("select count(*) from {schema}.jobs")
    assert n == 20


@pytest.mark.timeout(120)
def test_fencing_under_a_racing_reaper(pg_schema: PgSchema) -> None:
    """Workers complete while reapers take leases back: a job is never completed by a worker
    whose lease was taken, and every late result is recorded as discarded."""
    ids = pg_schema.enqueue_noops(300)
    backend = pg_schema.new_backend()
    try:
        claimed = []
        while batch := backend.claim(worker_id="w1", wants=[("default", 100)], lease_s=30.0):
            claimed.extend(batch)
        # expire half the leases, then race completions against reapers
        half = {c.id for c in claimed[::2]}
        pg_schema.sql(
            "update {schema}.jobs set lease_expires_at = now() - interval '1 s' where id = any(%s)",
            [list(half)],
        )
        start = threading.Barrier(4)
        done: set[int] = set()

        def completer() -> None:
            b = pg_schema.new_backend()
            try:
                start.wait()
                held = b.complete_many([c.lease for c in claimed])
                done.update(lease.job_id for lease in held)
            finally:
                b.close()

        def reaper() -> None:
            b = pg_schema.new_backend()
            try:
                start.wait()
                while b.reap_expired(limit=20, default_max_attempts=5):
                    pass
            finally:
                b.close()

        threads = [threading.Thread(target=f) for f in (completer, reaper, reaper, reaper)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        states = dict(pg_schema.sql("select id, state from {schema}.jobs"))
        for job_id in ids:
            if job_id in done:
                assert states[job_id] == "completed"
            else:
                assert job_id in half and states[job_id] == "retrying"
        [(discarded,)] = pg_schema.sql(
            "select count(*) from {schema}.job_events where to_state = 'discarded'"
        )
        assert discarded == len(ids) - len(done)
        [(double,)] = pg_schema.sql(
            "select count(*) from (select job_id from {schema}.job_events "
            "where to_state in ('completed', 'retrying') group by job_id having count(*) > 1) d"
        )
        assert double == 0
    finally:
        backend.close()
