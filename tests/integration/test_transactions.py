"""Transactional enqueue on every kind of connection a user has."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

import pgq
from tests import tasks
from tests.postgres import PgSchema


def count_jobs(pg: PgSchema) -> int:
    [(n,)] = pg.sql("select count(*) from {schema}.jobs")
    return int(n)


def sa_url(dsn: str) -> sa.URL:
    return sa.make_url(dsn).set(drivername="postgresql+psycopg")


def test_psycopg_commit_makes_the_job_durable(pg_schema: PgSchema) -> None:
    with pg_schema.connect() as conn, conn.transaction():
        conn.execute("create table if not exists public.orders_t (id int)")
        job = pgq.enqueue(conn, tasks.noop, schema=pg_schema.schema)
        assert count_jobs(pg_schema) == 0  # not visible before commit
    assert pgq.get_job(pg_schema.dsn, job.id, schema=pg_schema.schema) is not None


def test_psycopg_rollback_means_the_job_never_existed(pg_schema: PgSchema) -> None:
    with pg_schema.connect() as conn:

        def business_change() -> None:
            with conn.transaction():
                pgq.enqueue(conn, tasks.noop, schema=pg_schema.schema)
                raise RuntimeError("business change failed")

        with pytest.raises(RuntimeError):
            business_change()
        assert count_jobs(pg_schema) == 0
        [(events,)] = pg_schema.sql("select count(*) from {schema}.job_events")
        assert events == 0


def test_enqueue_never_commits_the_callers_transaction(pg_schema: PgSchema) -> None:
    conn = pg_schema.connect()  # not autocommit: psycopg opened a transaction
    try:
        pgq.enqueue(conn, tasks.noop, schema=pg_schema.schema)
        pgq.enqueue_many(conn, [pgq.JobSpec(task=tasks.noop)] * 3, schema=pg_schema.schema)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        assert count_jobs(pg_schema) == 0
        conn.rollback()
        assert count_jobs(pg_schema) == 0
    finally:
        conn.close()


def test_user_row_factory_does_not_confuse_pgq(pg_schema: PgSchema) -> None:
    from psycopg.rows import dict_row

    with pg_schema.connect(row_factory=dict_row) as conn:
        job = pgq.enqueue(conn, tasks.noop, schema=pg_schema.schema)
        assert isinstance(job.id, int)
        assert pgq.get_job(conn, job.id, schema=pg_schema.schema) is not None


def test_sqlalchemy_connection_joins_the_transaction(pg_schema: PgSchema) -> None:
    engine = sa.create_engine(sa_url(pg_schema.dsn))
    try:
        with engine.connect() as conn:
            pgq.enqueue(conn, tasks.noop, schema=pg_schema.schema)
            conn.rollback()
        assert count_jobs(pg_schema) == 0
        with engine.begin() as conn:
            conn.execute(sa.text("select 1"))
            job = pgq.enqueue(conn, tasks.noop, schema=pg_schema.schema)
        assert pgq.get_job(pg_schema.dsn, job.id, schema=pg_schema.schema) is not None
        with engine.connect() as conn:
            pgq.enqueue(conn, tasks.noop, schema=pg_schema.schema)  # autobegins
            conn.commit()
        assert count_jobs(pg_schema) == 2
    finally:
        engine.dispose()


def test_sqlalchemy_session_joins_the_transaction(pg_schema: PgSchema) -> None:
    engine = sa.create_engine(sa_url(pg_schema.dsn))
    try:
        with Session(engine) as session:
            pgq.enqueue(session, tasks.noop, schema=pg_schema.schema)
            session.rollback()
        assert count_jobs(pg_schema) == 0
        with Session(engine) as session, session.begin():
            job = pgq.enqueue(session, tasks.noop, schema=pg_schema.schema)
            assert pgq.get_job(session, job.id, schema=pg_schema.schema) is not None
        assert count_jobs(pg_schema) == 1
    finally:
        engine.dispose()


def test_sqlalchemy_with_another_driver_is_a_clear_error(pg_schema: PgSchema) -> None:
    class Fake:
        __module__ = "somewhere"

    with pytest.raises(pgq.PgqError, match="expected a DSN string"):
        pgq.enqueue(Fake(), tasks.noop)


# Three statements: due now with no key, delayed with no key, keyed.
@pytest.mark.parametrize(("key", "delay"), [(None, None), (None, 0.5), ("order-1", None)])
def test_notify_wakes_listeners_at_commit_not_before(
    pg_schema: PgSchema, key: str | None, delay: float | None
) -> None:
    listener = psycopg.connect(pg_schema.dsn, autocommit=True)
    try:
        listener.execute(f'listen "pgq_{pg_schema.schema}"')
        with pg_schema.connect() as conn:
            with conn.transaction():
                job = pgq.enqueue(
                    conn,
                    tasks.noop,
                    queue="wake",
                    idempotency_key=key,
                    delay=delay,
                    schema=pg_schema.schema,
                )
                record = pgq.get_job(conn, job.id, schema=pg_schema.schema)
                assert record is not None and [e.to_state for e in record.events] == ["queued"]
                assert (record.run_at > record.created_at) is (delay is not None)
                assert list(listener.notifies(timeout=0.3)) == []
            got = list(listener.notifies(timeout=2.0, stop_after=1))
        assert [n.payload for n in got] == ["wake"]
    finally:
        listener.close()


def test_missing_schema_says_to_migrate(pg_dsn: str) -> None:
    with pytest.raises(pgq.DatabaseError, match="pgq migrate"):
        pgq.enqueue(pg_dsn, tasks.noop, schema="pgq_never_migrated")


def test_bulk_copy_path_joins_the_transaction_and_notifies_at_commit(pg_schema: PgSchema) -> None:
    """A large plain batch is written with COPY: still all-or-nothing with the caller's
    transaction, still one event per job, still a NOTIFY at commit."""
    specs = [pgq.JobSpec(task=tasks.add, args={"a": i, "b": i}) for i in range(500)]
    with pg_schema.connect() as conn:
        conn.rollback()
        out = pgq.enqueue_many(conn, specs, schema=pg_schema.schema)
        assert len(out) == 500
        conn.rollback()
    assert count_jobs(pg_schema) == 0
    listener = psycopg.connect(pg_schema.dsn, autocommit=True)
    try:
        listener.execute(f'listen "pgq_{pg_schema.schema}"')
        with pg_schema.connect() as conn, conn.transaction():
            out = pgq.enqueue_many(conn, specs, schema=pg_schema.schema)
            assert list(listener.notifies(timeout=0.2)) == []
        assert [n.payload for n in listener.notifies(timeout=2.0, stop_after=1)] == ["default"]
    finally:
        listener.close()
    assert count_jobs(pg_schema) == 500
    record = pgq.get_job(pg_schema.dsn, out[321].id, schema=pg_schema.schema)
    assert record is not None
    assert (record.args, record.state, record.attempt) == ({"a": 321, "b": 321}, "queued", 0)
    assert [(e.from_state, e.to_state) for e in record.events] == [(None, "queued")]
    assert record.run_at == record.created_at


def test_threads_sharing_one_connection_each_get_their_own_job(
    pg_schema: PgSchema, monkeypatch: pytest.MonkeyPatch
) -> None:
    """psycopg lets threads share a connection; pgq keeps a cursor per thread on it, so no
    thread reads another's result: every enqueue returns the id of the row it wrote."""
    import threading
    import time

    # Widen the window between a statement and the read of its result, where another thread
    # could run a statement on a shared cursor (psycopg's connection lock covers only the
    # statement).
    execute = psycopg.Cursor.execute

    def slow_execute(self: Any, *args: Any, **kwargs: Any) -> Any:
        out = execute(self, *args, **kwargs)
        time.sleep(0.0002)
        return out

    monkeypatch.setattr(psycopg.Cursor, "execute", slow_execute)
    per_thread, threads = 100, 6
    seen: dict[int, list[tuple[int, int]]] = {n: [] for n in range(threads)}
    errors: list[BaseException] = []
    start = threading.Barrier(threads)
    with pg_schema.connect(autocommit=True) as conn:

        def produce(n: int) -> None:
            try:
                start.wait()
                for i in range(per_thread):
                    job = pgq.enqueue(conn, tasks.add, {"a": n, "b": i}, schema=pg_schema.schema)
                    seen[n].append((job.id, i))
            except BaseException as exc:  # reported below, in the test's own thread
                errors.append(exc)

        workers = [threading.Thread(target=produce, args=(n,)) for n in range(threads)]
        for t in workers:
            t.start()
        for t in workers:
            t.join()
    assert errors == []
    args_by_id = dict(pg_schema.sql("select id, args from {schema}.jobs"))
    assert len(args_by_id) == per_thread * threads
    for n, mine in seen.items():
        assert [args_by_id[job_id] for job_id, _ in mine] == [{"a": n, "b": i} for _, i in mine]


def test_a_dropped_connection_is_freed_at_once(pg_schema: PgSchema) -> None:
    """pgq keeps per-connection state (a backend and a cursor) without keeping the connection
    alive: a connection the caller drops is freed by reference counting, as psycopg intends,
    not left open until a garbage collection."""
    import gc
    import weakref

    gc.disable()
    try:
        conn = pg_schema.connect(autocommit=True)
        pgq.enqueue(conn, tasks.noop, schema=pg_schema.schema)
        pgq.get_job(conn, 1, schema=pg_schema.schema)
        ref = weakref.ref(conn)
        conn.close()
        del conn
        assert ref() is None
    finally:
        gc.enable()


def test_a_session_that_changes_connection_enqueues_on_the_new_one(pg_schema: PgSchema) -> None:
    engine = sa.create_engine(sa_url(pg_schema.dsn), pool_size=2)
    try:
        with Session(engine) as first, Session(engine) as second:
            a = pgq.enqueue(first, tasks.noop, schema=pg_schema.schema)
            b = pgq.enqueue(second, tasks.noop, schema=pg_schema.schema)
            first.rollback()  # only the first session's job goes
            second.commit()
        assert pgq.get_job(pg_schema.dsn, a.id, schema=pg_schema.schema) is None
        assert pgq.get_job(pg_schema.dsn, b.id, schema=pg_schema.schema) is not None
    finally:
        engine.dispose()
