from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.postgres import PgSchema, drop_schema, new_schema, postgres_server


@pytest.fixture(scope="session")
def pg_dsn() -> Iterator[str]:
    """A PostgreSQL server for the whole run (see tests/postgres.py for where it comes from)."""
    with postgres_server() as dsn:
        yield dsn


@pytest.fixture
def pg_schema(pg_dsn: str) -> Iterator[PgSchema]:
    """A fresh, migrated schema of this test's own."""
    schema = new_schema(pg_dsn)
    yield schema
    drop_schema(schema)
