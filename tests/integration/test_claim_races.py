"""Concurrency claims, raced for real: threads on their own connections, many iterations."""

from __future__ import annotations

import itertools
import threading
import time

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


@pytest.mark.timeout(120)
def test_racing_claims_never_pass_a_concurrency_cap(pg_schema: PgSchema) -> None:
    """8 threads claim, hold for a moment and complete a capped queue's jobs as fast as they
    can. Each batch is held from after its claim returned (it committed) until before its
    completion is sent (it has not committed): inside the span the database counts those
    jobs as running, so these spans may never overlap by more than the cap."""
    cap = 4
    ids = pg_schema.enqueue_noops(600, queue="capped")
    setup = pg_schema.new_backend()
    setup.write_policies([pgq.Queue("capped", concurrency=cap)], worker_id="test")
    setup.close()
    start = threading.Barrier(8)
    spans: dict[int, list[tuple[float, float, int]]] = {n: [] for n in range(8)}

    def claimer(n: int) -> None:
        backend = pg_schema.new_backend()
        try:
            start.wait()
            idle = 0
            while idle < 50:
                batch = backend.claim(worker_id=f"w{n}", wants=[("capped", 3)], lease_s=30.0)
                if not batch:
                    idle += 1
                    continue
                idle = 0
                claimed_at = time.monotonic()
                time.sleep(0.001)
                spans[n].append((claimed_at, time.monotonic(), len(batch)))
                assert len(backend.complete_many([c.lease for c in batch])) == len(batch)
        finally:
            backend.close()

    threads = [threading.Thread(target=claimer, args=(n,), name=f"capped-{n}") for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert pg_schema.states() == {"completed": 600}
    held = [span for per_thread in spans.values() for span in per_thread]
    assert sum(n for _, _, n in held) == len(ids)
    assert sum(1 for per_thread in spans.values() if per_thread) >= 2  # they really raced
    edges = sorted([(s, n) for s, _, n in held] + [(e, -n) for _, e, n in held])
    assert max(itertools.accumulate(n for _, n in edges)) == cap  # reached, never passed
