"""Schema migrations: alembic, shipped inside the wheel, run against pgq's own schema."""

from __future__ import annotations

import io
import threading
from importlib import resources
from pathlib import Path

from pgq._core.domain import check_schema_name
from pgq._core.errors import ConfigError, DatabaseError

# alembic keeps its running context in module globals: one migration per process at a time
# (processes are serialised by an advisory lock in env.py).
_ALEMBIC_LOCK = threading.Lock()


def script_location() -> Path:
    """Where pgq's alembic scripts are.

    In a wheel they are inside the package (`pgq/_alembic`); in an editable install that folder
    does not exist, so fall back to the repository's top-level `alembic/`.
    """
    packaged = Path(str(resources.files("pgq"))) / "_alembic"
    if (packaged / "env.py").is_file():
        return packaged
    repo = Path(__file__).resolve().parents[2] / "alembic"
    if (repo / "env.py").is_file():
        return repo
    raise ConfigError(f"pgq's migrations are missing: looked in {packaged} and {repo}")


def _config(schema: str, output: io.StringIO | None = None):  # type: ignore[no-untyped-def]  # alembic.config.Config is untyped in older alembic
    from alembic.config import Config

    location = script_location()
    cfg = Config(output_buffer=output) if output is not None else Config()
    cfg.set_main_option("script_location", str(location))
    cfg.set_main_option("path_separator", "os")
    cfg.attributes["schema"] = schema
    return cfg


def migrate(dsn: str, *, schema: str = "pgq") -> None:
    """Create pgq's tables in `schema`, or upgrade them to this version of pgq.

    Safe to run from many processes at once (an advisory lock serialises them) and when the
    schema is already up to date. Raises DatabaseError when the database cannot be reached.

    Example:
        >>> import pgq
        >>> pgq.migrate("postgresql://localhost/app")  # doctest: +SKIP
    """
    try:
        check_schema_name(schema)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    import psycopg
    import sqlalchemy as sa

    from alembic import command

    engine = sa.create_engine(
        "postgresql+psycopg://",
        creator=lambda: psycopg.connect(dsn),
        poolclass=sa.pool.NullPool,
    )
    try:
        with _ALEMBIC_LOCK, engine.connect() as connection:
            cfg = _config(schema)
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "head")
            connection.commit()
    except sa.exc.OperationalError as exc:
        raise DatabaseError(f"cannot migrate: {exc.orig or exc}".strip()) from exc
    except psycopg.OperationalError as exc:
        raise DatabaseError(f"cannot migrate: {exc}".strip()) from exc
    finally:
        engine.dispose()


def schema_sql(*, schema: str = "pgq") -> str:
    """The DDL `migrate` would run on an empty database, as SQL text (alembic offline mode)."""
    try:
        check_schema_name(schema)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    from alembic import command

    out = io.StringIO()
    with _ALEMBIC_LOCK:
        command.upgrade(_config(schema, out), "head", sql=True)
    return out.getvalue()
