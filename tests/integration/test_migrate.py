"""Real alembic migrations: fresh, repeated, concurrent, down and up again, and the printed DDL."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

import pgq
from tests.integration._procs import ROOT, clean_env, run_cli, wait_for

Catalog = dict[str, set[str]]

# What each revision has made, by name, as pg_catalog lists it (alembic's own table too). The
# walk below also compares every step with a schema migrated straight to that revision.
TABLES = {
    "0001": {"alembic_version", "jobs", "job_events", "workers"},
    "0002": {"alembic_version", "jobs", "job_events", "workers"}
    | {"queues", "queue_starts", "queue_events"},
}
TABLES["0003"] = TABLES["0002"]
INDEXES = {
    "0001": {"alembic_version_pkc", "jobs_pkey", "job_events_pkey", "workers_pkey"}
    | {"jobs_claim_idx", "jobs_idempotency_idx", "jobs_lease_idx"},
    "0002": {"alembic_version_pkc", "jobs_pkey", "job_events_pkey", "workers_pkey"}
    | {"jobs_claim_idx", "jobs_idempotency_idx", "jobs_leased_queue_idx", "jobs_finished_idx"}
    | {"queues_pkey", "queue_starts_pkey", "queue_events_pkey"},
}
INDEXES["0003"] = INDEXES["0002"]
SEQUENCES = {
    "0001": {"jobs_id_seq", "job_events_id_seq"},
    "0002": {"jobs_id_seq", "job_events_id_seq", "queue_events_id_seq"},
}
SEQUENCES["0003"] = SEQUENCES["0002"]
DOMAINS: dict[str, set[str]] = {"0001": set(), "0002": set()}
DOMAINS["0003"] = {"job_state", "queue_name", "max_attempts"}
TABLE_CHECKS = {
    "0001": {"jobs.jobs_state_check", "jobs.jobs_queue_check", "jobs.jobs_max_attempts_check"},
}
TABLE_CHECKS["0002"] = TABLE_CHECKS["0001"] | {
    "queues.queues_circuit_check",
    "queues.queues_cap_check",
    "queues.queues_rate_check",
}
TABLE_CHECKS["0003"] = TABLE_CHECKS["0002"] - TABLE_CHECKS["0001"]
DOMAIN_CHECKS: dict[str, set[str]] = {"0001": set(), "0002": set()}
DOMAIN_CHECKS["0003"] = {
    "job_state.job_state_check",
    "queue_name.queue_name_check",
    "max_attempts.max_attempts_check",
}
_schema_ids = itertools.count()
STATES = {"queued", "running", "retrying", "completed", "dead", "cancelled"}


def _tables(dsn: str, schema: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("select tablename from pg_tables where schemaname = %s", [schema])
        return {r[0] for r in rows}


def _catalog(dsn: str, schema: str) -> Catalog:
    """Every object in `schema`, by kind, from pg_catalog; all empty once the schema is gone.

    The schema's own name is written `S`, so that two schemas can be compared."""
    ns = "to_regnamespace(%(schema)s)"
    rel = f"select relname from pg_class where relnamespace = {ns} and relkind"
    queries = {
        # Everything a schema holds depends on it in pg_depend (DROP SCHEMA ... CASCADE finds
        # what to drop this way); the kinds below list the same again, by catalog.
        "objects": f"""
            select pg_describe_object(classid, objid, objsubid)
              from pg_depend
             where refclassid = 'pg_namespace'::regclass and refobjid = {ns}""",
        "tables": f"{rel} in ('r', 'p')",
        "indexes": f"{rel} in ('i', 'I')",
        "sequences": f"{rel} = 'S'",
        "other relations": f"{rel} not in ('r', 'p', 'i', 'I', 'S')",
        "domains": f"select typname from pg_type where typnamespace = {ns} and typtype = 'd'",
        "types": f"select typname || ' ' || typtype::text from pg_type where typnamespace = {ns}",
        "functions": f"select proname from pg_proc where pronamespace = {ns}",
        "table checks": f"""
            select r.relname || '.' || c.conname
              from pg_constraint as c
              join pg_class as r on r.oid = c.conrelid
             where c.connamespace = {ns} and c.contype = 'c'""",
        "domain checks": f"""
            select t.typname || '.' || c.conname
              from pg_constraint as c
              join pg_type as t on t.oid = c.contypid
             where c.connamespace = {ns}""",
        "constraint definitions": f"""
            select conname || ': ' || pg_get_constraintdef(oid)
              from pg_constraint
             where connamespace = {ns}""",
        "index definitions": f"""
            select pg_get_indexdef(oid)
              from pg_class
             where relnamespace = {ns} and relkind in ('i', 'I')""",
        "columns": f"""
            select r.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
                   || case when a.attnotnull then ' not null' else '' end
                   || case when a.attidentity <> '' then ' identity ' || a.attidentity::text
                           else '' end
                   || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '')
              from pg_attribute as a
              join pg_class as r on r.oid = a.attrelid
              left join pg_attrdef as d on d.adrelid = a.attrelid and d.adnum = a.attnum
             where r.relnamespace = {ns} and r.relkind = 'r'
               and a.attnum > 0 and not a.attisdropped""",
        "information_schema columns": """
            select table_name || '.' || column_name || ' ' || coalesce(domain_name, data_type)
              from information_schema.columns
             where table_schema = %(schema)s""",
    }
    with psycopg.connect(dsn) as conn:
        return {
            kind: {
                str(value).replace(f"{schema}.", "S.")
                for (value,) in conn.execute(query, {"schema": schema})  # type: ignore[arg-type]
            }
            for kind, query in queries.items()
        }


def _expected(revision: str) -> Catalog:
    return {
        "tables": TABLES[revision],
        "indexes": INDEXES[revision],
        "sequences": SEQUENCES[revision],
        "other relations": set(),
        "domains": DOMAINS[revision],
        "functions": set(),
        "table checks": TABLE_CHECKS[revision],
        "domain checks": DOMAIN_CHECKS[revision],
    }


def _named(catalog: Catalog) -> Catalog:
    return {kind: catalog[kind] for kind in _expected("0001")}


def _schema_exists(dsn: str, schema: str) -> bool:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("select to_regnamespace(%s) is not null", [schema]).fetchone()
    assert row is not None
    return bool(row[0])


def _revision(dsn: str, schema: str) -> str | None:
    if "alembic_version" not in _tables(dsn, schema):
        return None
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            sql.SQL("select version_num from {}.alembic_version").format(sql.Identifier(schema))
        ).fetchall()
    assert len(rows) <= 1
    return rows[0][0] if rows else None


def _rows(dsn: str, schema: str, table: str, *, without: tuple[str, ...] = ()) -> list[Any]:
    """Every row of a table as JSON (less the columns `without`), in a stable order."""
    query = sql.SQL("select to_jsonb(t) - %s::text[] from {}.{} as t").format(
        sql.Identifier(schema), sql.Identifier(table)
    )
    with psycopg.connect(dsn) as conn:
        rows = [r[0] for r in conn.execute(query, [list(without)])]
    return sorted(rows, key=lambda row: json.dumps(row, sort_keys=True))


def _set_state(dsn: str, schema: str, job_id: int, state: str) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute(
            sql.SQL("update {}.jobs set state = %s where id = %s").format(sql.Identifier(schema)),
            [state, job_id],
        )


def _fill(dsn: str, schema: str) -> dict[str, int]:
    """Jobs in every state with their events, queue policies with queue events, rate buckets and a
    worker. Returns the job id per state. Direct SQL stands in for workers (tests may)."""
    specs = [
        pgq.JobSpec(task="tests.tasks.noop", queue="emails"),
        pgq.JobSpec(task="tests.tasks.noop", queue="emails", idempotency_key="order-5512"),
        pgq.JobSpec(task="tests.tasks.noop", queue="reports", max_attempts=3, priority=-1),
        pgq.JobSpec(task="tests.tasks.noop", queue="reports", delay=3600.0),
        pgq.JobSpec(task="tests.tasks.noop", queue="emails", max_attempts=1),
        pgq.JobSpec(task="tests.tasks.noop", queue="emails"),
    ]
    ids = [e.id for e in pgq.enqueue_many(dsn, specs, schema=schema)]
    states = ["running", "retrying", "completed", "queued", "dead", "cancelled"]
    job = dict(zip(states, ids, strict=True))
    s = sql.Identifier(schema)
    with psycopg.connect(dsn) as conn, conn.transaction():

        def run(query: str, params: dict[str, Any]) -> None:
            conn.execute(sql.SQL(query).format(s=s), params)  # type: ignore[arg-type]

        claimed = [job["running"], job["retrying"], job["completed"], job["dead"]]
        run(
            "update {s}.jobs set state = 'running', attempt = 1, worker_id = 'w-1',"
            " lease_expires_at = now() + interval '30 seconds' where id = any(%(ids)s)",
            {"ids": claimed},
        )
        run(
            "insert into {s}.job_events (job_id, from_state, to_state, attempt, worker_id)"
            " select id, 'queued', 'running', 1, 'w-1' from unnest(%(ids)s::bigint[]) as id",
            {"ids": claimed},
        )
        for state, error in (
            ("retrying", "ConnectionError: mail server busy"),
            ("completed", None),
            ("dead", "pgq.Fail: no such address"),
        ):
            run(
                "update {s}.jobs set state = %(state)s, lease_expires_at = null,"
                " last_error = %(error)s,"
                " run_at = case when %(finished)s then run_at"
                "   else now() + interval '1 minute' end,"
                " finished_at = case when %(finished)s then now() end"
                " where id = %(id)s",
                {"state": state, "error": error, "id": job[state], "finished": state != "retrying"},
            )
            run(
                "insert into {s}.job_events (job_id, from_state, to_state, attempt, worker_id,"
                " error) values (%(id)s, 'running', %(state)s, 1, 'w-1', %(error)s)",
                {"state": state, "error": error, "id": job[state]},
            )
        run(
            "insert into {s}.workers (id, hostname, pid, queues, concurrency, restart_required)"
            " values ('w-1', 'host-a', 4242, '{{emails,reports}}', 4,"
            " 'queues.emails.concurrency 5 -> 8')",
            {},
        )
        run(
            "insert into {s}.queues (name, concurrency, rate_limit, rate_per_s, circuit_failures,"
            " circuit_window_s, circuit_cooldown_s, circuit_probes, max_attempts,"
            " backoff_base_s, backoff_cap_s, timeout_s, retention_completed_s, updated_by)"
            " values ('reports', 2, 10, 1.0, 5, 30.0, 60.0, 1, 3, 1.0, 60.0, 30.0, 3600.0,"
            " 'w-1')",
            {},
        )
        run(
            "insert into {s}.queue_events (queue, kind, reason, worker_id)"
            " values ('reports', 'policy', 'policy written', 'w-1')",
            {},
        )
        run(
            "insert into {s}.queue_starts (queue, bucket_at, starts)"
            " values ('reports', date_trunc('second', now()), 3)",
            {},
        )
    pgq.cancel_job(dsn, job["cancelled"], schema=schema)
    assert pgq.pause_queue(dsn, "emails", schema=schema)  # a second queues row and queue event
    return job


@pytest.fixture
def new_schema_name(pg_dsn: str) -> Iterator[Callable[[], str]]:
    """Makes schema names for one test; each schema is dropped afterwards."""
    made: list[str] = []

    def name() -> str:
        made.append(f"pgq_mig_{os.getpid()}_{next(_schema_ids)}")
        return made[-1]

    yield name
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        for schema in made:
            conn.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(schema)))


@pytest.fixture
def schema_name(new_schema_name: Callable[[], str]) -> str:
    return new_schema_name()


@pytest.fixture
def fresh_at(pg_dsn: str, new_schema_name: Callable[[], str]) -> Callable[[str], Catalog]:
    """The catalog of a schema migrated straight from nothing to a revision (made once each)."""
    made: dict[str, Catalog] = {}

    def catalog(revision: str) -> Catalog:
        if revision not in made:
            schema = new_schema_name()
            pgq.migrate(pg_dsn, schema=schema, to=revision)
            made[revision] = _catalog(pg_dsn, schema)
        return made[revision]

    return catalog


def test_migrate_creates_the_tables_and_is_repeatable(pg_dsn: str, schema_name: str) -> None:
    first = pgq.migrate(pg_dsn, schema=schema_name)
    assert {"jobs", "job_events", "workers", "alembic_version"} <= _tables(pg_dsn, schema_name)
    assert (first.from_revision, first.to_revision, first.direction) == (None, "0003", "upgrade")
    again = pgq.migrate(pg_dsn, schema=schema_name)  # already at head: nothing to do
    assert (again.from_revision, again.to_revision, again.direction) == ("0003", "0003", None)
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


# -- down and up ---------------------------------------------------------------------------


def test_walk_down_to_base_and_up_again_keeps_data_and_leaves_nothing(
    pg_dsn: str, schema_name: str, fresh_at: Callable[[str], Catalog]
) -> None:
    pgq.migrate(pg_dsn, schema=schema_name)
    job = _fill(pg_dsn, schema_name)
    assert {r["state"] for r in _rows(pg_dsn, schema_name, "jobs")} == STATES
    jobs = _rows(pg_dsn, schema_name, "jobs")
    events = _rows(pg_dsn, schema_name, "job_events")
    workers = _rows(pg_dsn, schema_name, "workers", without=("restart_required",))
    queues = {t: _rows(pg_dsn, schema_name, t) for t in ("queues", "queue_starts", "queue_events")}
    assert all(queues.values()) and len(queues["queues"]) == 2
    assert _named(_catalog(pg_dsn, schema_name)) == _expected("0003")
    assert _catalog(pg_dsn, schema_name) == fresh_at("0003")

    for before, revision in (("0003", "0002"), ("0002", "0001")):
        done = pgq.migrate(pg_dsn, schema=schema_name, to=revision)
        assert (done.from_revision, done.to_revision) == (before, revision)
        assert done.direction == "downgrade" and done.head == "0003"
        assert _revision(pg_dsn, schema_name) == revision
        # what this revision has, and nothing else: the same as a schema migrated up to it
        assert _named(_catalog(pg_dsn, schema_name)) == _expected(revision)
        assert _catalog(pg_dsn, schema_name) == fresh_at(revision)
        # the rows of the tables that are still there
        assert _rows(pg_dsn, schema_name, "jobs") == jobs
        assert _rows(pg_dsn, schema_name, "job_events") == events
        assert _rows(pg_dsn, schema_name, "workers", without=("restart_required",)) == workers
        if revision == "0002":
            assert {t: _rows(pg_dsn, schema_name, t) for t in queues} == queues
    # at 0001 the table check constraints are back and enforced again
    with pytest.raises(psycopg.errors.CheckViolation, match="jobs_state_check"):
        _set_state(pg_dsn, schema_name, job["queued"], "lost")

    done = pgq.migrate(pg_dsn, schema=schema_name, to="base")
    assert (done.from_revision, done.to_revision, done.direction) == ("0001", None, "downgrade")
    assert done.schema_dropped  # pgq created it
    assert not _schema_exists(pg_dsn, schema_name)
    assert all(not objects for objects in _catalog(pg_dsn, schema_name).values())

    for before, revision in ((None, "0001"), ("0001", "0002"), ("0002", "0003")):
        done = pgq.migrate(pg_dsn, schema=schema_name, to=revision)
        assert (done.from_revision, done.to_revision, done.direction) == (
            before,
            revision,
            "upgrade",
        )
        assert _catalog(pg_dsn, schema_name) == fresh_at(revision)
    enqueued = pgq.enqueue(pg_dsn, "tests.tasks.noop", schema=schema_name)
    record = pgq.get_job(pg_dsn, enqueued.id, schema=schema_name)
    assert record is not None and record.state == "queued"


def test_down_to_0001_and_up_again_keeps_the_jobs(pg_dsn: str, schema_name: str) -> None:
    pgq.migrate(pg_dsn, schema=schema_name)
    job = _fill(pg_dsn, schema_name)
    jobs = _rows(pg_dsn, schema_name, "jobs")
    events = _rows(pg_dsn, schema_name, "job_events")
    pgq.migrate(pg_dsn, schema=schema_name, to="0001")
    done = pgq.migrate(pg_dsn, schema=schema_name)  # 0003's domains check the rows kept
    assert (done.from_revision, done.to_revision, done.direction) == ("0001", "0003", "upgrade")
    assert _rows(pg_dsn, schema_name, "jobs") == jobs
    assert _rows(pg_dsn, schema_name, "job_events") == events
    assert _rows(pg_dsn, schema_name, "queues") == []  # 0001 dropped the policies with their table
    with pytest.raises(psycopg.errors.CheckViolation, match="job_state_check"):
        _set_state(pg_dsn, schema_name, job["queued"], "lost")
    again = pgq.enqueue(
        pg_dsn, "tests.tasks.noop", queue="emails", idempotency_key="order-5512", schema=schema_name
    )
    assert again == pgq.Enqueued(id=job["retrying"], created=False)  # the key still holds


@pytest.mark.parametrize("owner", ["application", "pgq, holding an application table"])
def test_base_keeps_a_schema_that_is_not_only_pgqs(
    pg_dsn: str, schema_name: str, owner: str
) -> None:
    s = sql.Identifier(schema_name)
    if owner == "application":  # e.g. made by the DBA, with its grants
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("create schema {}").format(s))
    pgq.migrate(pg_dsn, schema=schema_name)
    _fill(pg_dsn, schema_name)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("create table {}.orders (id int primary key)").format(s))
        conn.execute(sql.SQL("insert into {}.orders values (5512)").format(s))

    done = pgq.migrate(pg_dsn, schema=schema_name, to="base")
    assert (done.to_revision, done.schema_dropped) == (None, False)
    left = _catalog(pg_dsn, schema_name)
    assert left["objects"] == {"table S.orders"}  # the application's, and nothing of pgq
    assert left["tables"] == {"orders"} and left["indexes"] == {"orders_pkey"}
    assert left["types"] == {"orders c", "_orders b"}  # its row type and their array
    assert not left["sequences"] and not left["domains"] and not left["functions"]
    assert _rows(pg_dsn, schema_name, "orders") == [{"id": 5512}]


def test_base_keeps_the_schema_made_by_the_printed_ddl(pg_dsn: str, schema_name: str) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:  # as a team's own migration tool does
        conn.execute(pgq.schema_sql(schema=schema_name).encode())
    done = pgq.migrate(pg_dsn, schema=schema_name, to="base")
    assert (done.from_revision, done.to_revision, done.schema_dropped) == ("0003", None, False)
    assert _schema_exists(pg_dsn, schema_name)  # `create schema if not exists` marks nothing
    assert all(not objects for objects in _catalog(pg_dsn, schema_name).values())


def test_base_of_a_schema_that_never_was_writes_nothing(pg_dsn: str, schema_name: str) -> None:
    done = pgq.migrate(pg_dsn, schema=schema_name, to="base")
    assert (done.from_revision, done.to_revision, done.direction) == (None, None, None)
    assert not done.schema_dropped
    assert not _schema_exists(pg_dsn, schema_name)


@pytest.mark.parametrize("bad", ["9999", "-1", "000", "heads", "0002:0003", "", "HEAD"])
def test_an_unknown_revision_is_refused_before_connecting(pg_dsn: str, bad: str) -> None:
    dead = "postgresql://nobody@127.0.0.1:1/nothing?connect_timeout=2"
    with pytest.raises(pgq.ConfigError) as raised:
        pgq.migrate(dead, schema="pgq_mig_never", to=bad)
    assert str(raised.value) == (
        f"to must be 0001, 0002, 0003, head or base (a revision of pgq's schema), got {bad!r}"
    )
    assert not _schema_exists(pg_dsn, "pgq_mig_never")


def test_a_schema_at_a_revision_this_pgq_does_not_know(pg_dsn: str, schema_name: str) -> None:
    pgq.migrate(pg_dsn, schema=schema_name)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:  # as a newer pgq would leave it
        conn.execute(
            sql.SQL("update {}.alembic_version set version_num = '0099'").format(
                sql.Identifier(schema_name)
            )
        )
    before = _catalog(pg_dsn, schema_name)
    for to in ("head", "base"):
        with pytest.raises(pgq.PgqError, match="at revision 0099, which this version of pgq"):
            pgq.migrate(pg_dsn, schema=schema_name, to=to)
    assert _catalog(pg_dsn, schema_name) == before


# One process of the race below: imports first, then waits for the others, then migrates.
_RACER = """
import pathlib, sys, time
import pgq, psycopg, sqlalchemy, alembic.command
dsn, schema, ready, go, *targets = sys.argv[1:]
pathlib.Path(ready).touch()
while not pathlib.Path(go).exists():
    time.sleep(0.001)
for to in targets:
    pgq.migrate(dsn, schema=schema, to=to)
"""


@pytest.mark.timeout(240)
def test_concurrent_downgrades_and_upgrades_take_turns(
    pg_dsn: str, schema_name: str, fresh_at: Callable[[str], Catalog], tmp_path: Path
) -> None:
    """Processes, so that only the advisory lock in env.py can serialise them (threads of one
    process take turns on a threading.Lock first). Each run must see the schema as the one
    before left it: without the lock this fails (duplicate tables, "tuple concurrently
    updated", a schema dropped under another run)."""
    targets = ["base", "head", "0001", "0002", "base", "head"]
    go = tmp_path / "go"
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, pg_dsn, schema_name, str(tmp_path / f"ready-{n}")]
            + [str(go)]
            + [targets[(n + i) % len(targets)] for i in range(8)],
            cwd=ROOT,
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(len(targets))
    ]
    try:
        wait_for(
            lambda: all((tmp_path / f"ready-{n}").exists() for n in range(len(targets))),
            timeout=60,
            what="every racer to start",
        )
        go.touch()
        outcomes = [(p.wait(180), *p.communicate()) for p in racers]
    finally:
        for p in racers:
            p.kill()
    assert [o for o in outcomes if o != (0, "", "")] == []
    last = _revision(pg_dsn, schema_name)
    if last is None:
        assert all(not objects for objects in _catalog(pg_dsn, schema_name).values())
    else:
        assert _catalog(pg_dsn, schema_name) == fresh_at(last)


# -- pgq migrate, as typed in a shell -----------------------------------------------------


def test_cli_migrate_to_base_and_back_to_head(pg_dsn: str, schema_name: str) -> None:
    where = ("--dsn", pg_dsn, "--schema", schema_name)
    up = run_cli("migrate", *where)
    assert (up.returncode, up.stderr) == (0, "")
    assert (
        up.stdout
        == f"pgq schema '{schema_name}' is up to date: upgraded from base to 0003 (head)\n"
    )
    pgq.pause_queue(pg_dsn, "emails", schema=schema_name)

    down = run_cli("migrate", *where, "--to", "base")
    assert (down.returncode, down.stderr) == (0, "")
    assert down.stdout == (
        f"pgq schema '{schema_name}': downgraded from 0003 (head) to base; no pgq object is"
        " left, and the schema, which pgq had created, is dropped\n"
    )
    assert not _schema_exists(pg_dsn, schema_name)

    head = run_cli("migrate", *where, "--to", "head")
    assert (head.returncode, head.stderr) == (0, "")
    assert head.stdout == (
        f"pgq schema '{schema_name}' is up to date: upgraded from base to 0003 (head)\n"
    )
    middle = run_cli("migrate", *where, "--to", "0002")
    assert middle.stdout == f"pgq schema '{schema_name}': downgraded from 0003 (head) to 0002\n"
    again = run_cli("migrate", *where, "--to", "0002")
    assert again.stdout == f"pgq schema '{schema_name}': already at 0002\n"
    assert _revision(pg_dsn, schema_name) == "0002"


@pytest.mark.parametrize("exists", [False, True])
def test_cli_migrate_to_an_unknown_revision_is_a_usage_error(
    pg_dsn: str, schema_name: str, exists: bool
) -> None:
    if exists:
        pgq.migrate(pg_dsn, schema=schema_name, to="0002")
    before = _catalog(pg_dsn, schema_name)
    result = run_cli("migrate", "--dsn", pg_dsn, "--schema", schema_name, "--to", "9999")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        "pgq: error: --to must be 0001, 0002, 0003, head or base (a revision of pgq's schema),"
        " got '9999'\n"
    )
    assert _catalog(pg_dsn, schema_name) == before  # nothing written
    assert _schema_exists(pg_dsn, schema_name) is exists
