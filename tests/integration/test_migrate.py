"""Real alembic migrations: fresh, repeated, concurrent, and the printed DDL."""

from __future__ import annotations

import threading

import psycopg
import pytest
from psycopg import sql

import pgq


def _tables(dsn: str, schema: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("select tablename from pg_tables where schemaname = %s", [schema])
        return {r[0] for r in rows}


@pytest.fixture
def schema_name(pg_dsn: str):  # type: ignore[no-untyped-def]
    name = f"pgq_mig_{threading.get_ident() % 10_000}"
    yield name
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(name)))


def test_migrate_creates_the_tables_and_is_repeatable(pg_dsn: str, schema_name: str) -> None:
    pgq.migrate(pg_dsn, schema=schema_name)
    assert {"jobs", "job_events", "workers", "alembic_version"} <= _tables(pg_dsn, schema_name)
    pgq.migrate(pg_dsn, schema=schema_name)  # already at head: nothing to do
    job = pgq.enqueue(pg_dsn, "tests.tasks.noop", schema=schema_name)
    assert pgq.get_job(pg_dsn, job.id, schema=schema_name) is not None


def test_concurrent_migrations_do_not_collide(pg_dsn: str, schema_name: str) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def run() -> None:
        try:
            start.wait()
            pgq.migrate(pg_dsn, schema=schema_name)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert "jobs" in _tables(pg_dsn, schema_name)


def test_schema_sql_matches_what_migrate_builds(pg_dsn: str, schema_name: str) -> None:
    ddl = pgq.schema_sql(schema=schema_name)
    assert f"CREATE TABLE {schema_name}.jobs" in ddl
    assert "jobs_claim_idx" in ddl and "jobs_leased_queue_idx" in ddl
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(ddl.encode())
    assert {"jobs", "job_events", "workers"} <= _tables(pg_dsn, schema_name)
    pgq.migrate(pg_dsn, schema=schema_name)  # alembic sees it is at head


@pytest.mark.parametrize("bad", ["Pgq", "pgq-x", "1abc", 'x"; drop table y; --', ""])
def test_schema_names_are_validated(pg_dsn: str, bad: str) -> None:
    with pytest.raises(pgq.ConfigError, match="schema must match"):
        pgq.migrate(pg_dsn, schema=bad)
    with pytest.raises(pgq.ConfigError, match="schema must match"):
        pgq.enqueue(pg_dsn, "tests.tasks.noop", schema=bad)


def test_migrate_on_a_dead_database_is_a_database_error() -> None:
    with pytest.raises(pgq.DatabaseError, match="cannot migrate"):
        pgq.migrate("postgresql://nobody@127.0.0.1:1/nothing?connect_timeout=2")
