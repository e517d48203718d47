"""The `pgq` command in a subprocess, as a user types it at the root of their project."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

import pgq
from tests.integration._procs import clean_env, get, run_cli
from tests.postgres import PgSchema


def db(pg: PgSchema) -> list[str]:
    return ["--dsn", pg.dsn, "--schema", pg.schema]


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The stderr of a failed command: exactly one line, no traceback."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.fixture
def fresh_schema(pg_dsn: str) -> Iterator[str]:
    """A schema name nothing has created yet; dropped afterwards."""
    name = f"pgq_cli_{os.getpid()}_{time.monotonic_ns()}"
    try:
        yield name
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(name)))


@pytest.mark.timeout(60)
def test_migrate_twice_then_schema(pg_dsn: str, fresh_schema: str) -> None:
    for _ in range(2):  # a second migrate finds everything up to date
        result = run_cli("migrate", "--dsn", pg_dsn, "--schema", fresh_schema, script=True)
        assert result.returncode == 0, result.stderr
        assert "up to date" in result.stdout
    with psycopg.connect(pg_dsn) as conn:
        tables = {
            name
            for (name,) in conn.execute(
                "select table_name from information_schema.tables where table_schema = %s",
                (fresh_schema,),
            )
        }
    assert {"jobs", "job_events", "workers"} <= tables

    result = run_cli("schema", script=True)
    assert result.returncode == 0, result.stderr
    assert "CREATE TABLE pgq.jobs (" in result.stdout


@pytest.mark.timeout(60)
def test_burst_worker_drains_and_exits_0(pg_schema: PgSchema) -> None:
    specs = [pgq.JobSpec(task="tests.tasks.add", args={"a": i, "b": 1}) for i in range(50)]
    ids = [e.id for e in pgq.enqueue_many(pg_schema.dsn, specs, schema=pg_schema.schema)]
    result = run_cli(
        "worker", "tests.tasks", *db(pg_schema), "--burst", "--max-wait", "0", script=True
    )
    assert result.returncode == 0, result.stderr
    assert pg_schema.states() == {"completed": len(ids)}


@pytest.mark.timeout(30)
def test_worker_with_an_unknown_module_says_so_in_one_line(pg_schema: PgSchema) -> None:
    result = run_cli("worker", "no_such_module_xyz", *db(pg_schema))
    assert result.returncode != 0
    assert "no_such_module_xyz" in one_error_line(result)


@pytest.mark.timeout(30)
def test_worker_on_a_refused_connection_fails_in_one_line() -> None:
    started = time.monotonic()
    result = run_cli(
        "worker", "tests.tasks",
        "--dsn", "postgresql://nobody@127.0.0.1:1/nothing",
        "--connect-timeout", "2",
    )  # fmt: skip
    assert time.monotonic() - started <= 2 + 2
    assert result.returncode == 1
    assert "cannot connect" in one_error_line(result)


@pytest.mark.timeout(30)
def test_worker_on_a_server_that_never_answers_gives_up_after_connect_timeout() -> None:
    # A socket that completes the TCP handshake (the kernel's backlog) and then says nothing:
    # only --connect-timeout ends the wait.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        started = time.monotonic()
        result = run_cli(
            "worker", "tests.tasks",
            "--dsn", f"postgresql://nobody@127.0.0.1:{port}/nothing",
            "--connect-timeout", "2",
        )  # fmt: skip
        elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    assert "cannot connect" in one_error_line(result)
    assert elapsed <= 2 + 2


@pytest.mark.timeout(30)
def test_worker_without_a_dsn_is_a_usage_error() -> None:
    result = run_cli("worker", "tests.tasks")  # clean_env(): no PGQ_DSN either
    assert result.returncode == 2
    assert "--dsn" in result.stderr


@pytest.mark.timeout(30)
def test_worker_reads_the_dsn_from_pgq_dsn(pg_schema: PgSchema) -> None:
    pg_schema.enqueue_noops(3)
    env = clean_env(PGQ_DSN=pg_schema.dsn, PGQ_SCHEMA=pg_schema.schema)
    result = run_cli("worker", "tests.tasks", "--burst", "--max-wait", "0", env=env)
    assert result.returncode == 0, result.stderr
    assert pg_schema.states() == {"completed": 3}


@pytest.mark.timeout(30)
def test_worker_on_a_database_without_pgq_tables_says_to_migrate(pg_dsn: str) -> None:
    result = run_cli("worker", "tests.tasks", "--dsn", pg_dsn, "--schema", "pgq_never_migrated")
    assert result.returncode == 1
    assert "pgq migrate" in one_error_line(result)


@pytest.mark.timeout(60)
def test_jobs_list_show_retry_cancel(pg_schema: PgSchema) -> None:
    target = pg_schema.dsn
    schema = pg_schema.schema
    ok = pgq.enqueue(target, "tests.tasks.add", {"a": 1, "b": 2}, schema=schema).id
    doomed = pgq.enqueue(target, "tests.tasks.gives_up", schema=schema).id
    later = pgq.enqueue(target, "tests.tasks.noop", delay=3600, schema=schema).id
    drained = run_cli("worker", "tests.tasks", *db(pg_schema), "--burst", "--max-wait", "0")
    assert drained.returncode == 0, drained.stderr
    assert [get(pg_schema, i).state for i in (ok, doomed, later)] == [
        "completed", "dead", "queued",
    ]  # fmt: skip

    listed = run_cli("jobs", "list", *db(pg_schema))
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line.split() for line in listed.stdout.splitlines()[1:] if line}
    assert rows[str(ok)][3] == "completed"
    assert rows[str(doomed)][3] == "dead"
    assert rows[str(later)][3] == "queued"

    shown = run_cli("jobs", "show", str(doomed), *db(pg_schema))
    assert shown.returncode == 0, shown.stderr
    assert "state=dead" in shown.stdout
    assert "the order no longer exists" in shown.stdout
    assert "∅ → queued" in shown.stdout
    assert "queued → running" in shown.stdout
    assert "running → dead" in shown.stdout

    retried = run_cli("jobs", "retry", str(doomed), *db(pg_schema))
    assert retried.returncode == 0, retried.stderr
    assert "now queued" in retried.stdout
    record = get(pg_schema, doomed)
    assert (record.state, record.attempt) == ("queued", 0)

    cancelled = run_cli("jobs", "cancel", str(later), *db(pg_schema))
    assert cancelled.returncode == 0, cancelled.stderr
    assert get(pg_schema, later).state == "cancelled"

    refused = run_cli("jobs", "retry", str(ok), *db(pg_schema))
    assert refused.returncode == 1
    assert "completed" in one_error_line(refused)
    assert get(pg_schema, ok).state == "completed"

    missing = run_cli("jobs", "show", "999999", *db(pg_schema))
    assert missing.returncode == 1
    assert "no job" in one_error_line(missing)


@pytest.mark.timeout(30)
def test_python_dash_m_pgq_is_the_same_cli_as_the_pgq_script() -> None:
    module = run_cli("--help")
    script = run_cli("--help", script=True)
    assert module.returncode == script.returncode == 0
    assert module.stdout == script.stdout
    assert "Usage: pgq" in module.stdout
    assert all(cmd in module.stdout for cmd in ("migrate", "worker", "jobs", "schema"))
