"""Turn what the user passed (DSN, psycopg connection, SQLAlchemy connection or session, or an
in-memory backend) into a Backend."""

from __future__ import annotations

import contextlib
import weakref
from typing import Any

from pgq._backends.ports import Backend
from pgq._core.domain import check_schema_name
from pgq._core.errors import ConfigError, PgqError

DEFAULT_SCHEMA = "pgq"


def _schema(schema: str | None) -> str:
    try:
        return check_schema_name(DEFAULT_SCHEMA if schema is None else schema)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _is_backend(target: object) -> bool:
    return hasattr(target, "claim") and hasattr(target, "enqueue_many")


# The backend of each psycopg connection pgq was given, per schema: built once, not at every
# enqueue. Weak keys, and the backend holds its connection weakly, so nothing outlives it.
_ON_CONNECTION: weakref.WeakKeyDictionary[Any, dict[str | None, Backend]] = (
    weakref.WeakKeyDictionary()
)


def backend_for(
    target: object, *, schema: str | None = None
) -> contextlib.AbstractContextManager[Backend]:
    """A Backend for `target`, closed afterwards if this call opened it.

    A psycopg or SQLAlchemy target runs in the caller's transaction and is never committed; a
    DSN string gets a connection of its own, committed when the call ends. (Context managers
    of classes, not generators: every enqueue goes through here.)
    """
    try:
        return contextlib.nullcontext(_ON_CONNECTION[target][schema])
    except (KeyError, TypeError):  # not seen yet, or not a weakly referable connection
        pass
    if _is_backend(target):
        return contextlib.nullcontext(target)  # type: ignore[arg-type]  # checked structurally
    from pgq._backends.postgres import PostgresBackend

    name = _schema(schema)
    if isinstance(target, str):
        return contextlib.closing(PostgresBackend.from_dsn(target, schema=name))
    # A SQLAlchemy target is resolved at every call (its transaction may change, and a
    # session may hand out another connection); the backend of the psycopg connection under
    # it is kept like any other.
    conn = _psycopg_connection(target)
    backends = _ON_CONNECTION.setdefault(conn, {})
    backend = backends.get(schema)
    if backend is None:
        backend = backends[schema] = PostgresBackend.on_connection(conn, schema=name)
    return contextlib.nullcontext(backend)


def _psycopg_connection(target: object) -> Any:
    import psycopg

    if isinstance(target, psycopg.Connection):
        return target
    module = type(target).__module__
    if module.startswith("sqlalchemy"):
        return _from_sqlalchemy(target)
    raise PgqError(
        "expected a DSN string, a psycopg Connection, a SQLAlchemy Connection or Session, "
        f"or pgq.testing.InMemoryBackend; got {type(target).__name__}"
    )


def _from_sqlalchemy(target: Any) -> Any:
    import psycopg
    from sqlalchemy.engine import Connection
    from sqlalchemy.orm import Session

    if isinstance(target, Session):
        conn = target.connection()  # begins the session's transaction if needed
    elif isinstance(target, Connection):
        conn = target
        if not conn.in_transaction():
            conn.begin()  # what SQLAlchemy's autobegin would do; the caller commits it
    else:
        raise PgqError(f"expected a SQLAlchemy Connection or Session, got {type(target).__name__}")
    dbapi = conn.connection.dbapi_connection
    if not isinstance(dbapi, psycopg.Connection):
        raise PgqError(
            "pgq needs SQLAlchemy's psycopg (3) driver: create the engine with a "
            f"'postgresql+psycopg://' URL (this one uses {type(dbapi).__module__})"
        )
    return dbapi


def worker_backend(
    target: object, *, schema: str, connect_timeout_s: float
) -> tuple[Backend, bool]:
    """The backend a worker runs on, and whether the worker owns it (closes it at the end).

    A DSN is checked first (the database answers, pgq's tables are there: a clear
    DatabaseError otherwise, within `connect_timeout_s`), then gets a small pool of the
    worker's own connections; a backend object (the in-memory one) is used as it is."""
    if _is_backend(target):
        return target, False  # type: ignore[return-value]  # checked structurally
    if not isinstance(target, str):
        raise PgqError(
            "a worker takes a DSN string or a backend such as pgq.testing.InMemoryBackend(); "
            f"got {type(target).__name__}"
        )
    from pgq._backends.postgres import PostgresBackend, check_database

    name = _schema(schema)
    check_database(target, schema=name, timeout_s=connect_timeout_s)
    backend = PostgresBackend.pooled(target, schema=name, size=4, connect_timeout=connect_timeout_s)
    return backend, True
