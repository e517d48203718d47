"""Schema migrations: alembic, shipped inside the wheel, run against pgq's own schema."""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pgq._core.domain import check_schema_name
from pgq._core.errors import ConfigError, DatabaseError, PgqError

if TYPE_CHECKING:
    from alembic.runtime.migration import MigrationContext, RevisionStep
    from alembic.script import ScriptDirectory

# alembic keeps its running context in module globals: one migration per process at a time
# (processes are serialised by an advisory lock in env.py).
_ALEMBIC_LOCK = threading.Lock()


@dataclass(frozen=True, slots=True)
class Migration:
    """What `migrate` did to a schema.

    A revision is an alembic revision id such as `"0002"`; None stands for base: no pgq object
    in the schema (before: it was empty or did not exist; after: everything of pgq is gone).
    """

    schema: str
    from_revision: str | None
    to_revision: str | None
    head: str  # the newest revision this version of pgq has
    direction: Literal["upgrade", "downgrade"] | None  # None: it was there already
    schema_dropped: bool  # at base: the schema itself was dropped (pgq had created it)


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


def _checked_schema(schema: str) -> str:
    try:
        return check_schema_name(schema)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _script() -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(script_location()))


def _revisions(script: ScriptDirectory) -> list[str]:
    """pgq's revision ids, oldest first. Its history is one line: each revises the one before."""
    return [s.revision for s in reversed(list(script.walk_revisions()))]


def check_revision(to: object, *, name: str = "to") -> str:
    """Return `to` if it names a revision of pgq's schema (or head, or base), else ConfigError.

    Only exact names are accepted, not alembic's relative or partial ones (`-1`, `000`).
    """
    return _checked_revision(to, _revisions(_script()), name)


def _checked_revision(to: object, order: list[str], name: str) -> str:
    allowed = [*order, "head", "base"]
    if not isinstance(to, str) or to not in allowed:
        listed = ", ".join(allowed[:-1]) + f" or {allowed[-1]}"
        raise ConfigError(f"{name} must be {listed} (a revision of pgq's schema), got {to!r}")
    return to


def migrate(dsn: str, *, schema: str = "pgq", to: str = "head") -> Migration:
    """Create pgq's tables in `schema`, upgrade them, or downgrade them to an older revision.

    Args:
        dsn: a libpq connection string or URL.
        schema: the schema holding pgq's tables (default `"pgq"`); created when missing.
        to: the revision to end at (default `"head"`, what this version of pgq needs): a
            revision id (`"0001"`, `"0002"`, ...), upgrading or downgrading to it as needed, or
            `"base"`, which drops every object pgq made: its tables (and their rows), indexes,
            domains and alembic's version table. The schema itself is dropped too if
            `migrate` created it and nothing else is left in it; otherwise it is kept.

    Returns what it did: `from_revision` and `to_revision` (None for base), `direction`
    (`"upgrade"`, `"downgrade"`, or None when the schema was at `to` already), `head`, and
    `schema_dropped`. Safe to run from many processes at once (an advisory lock serialises them,
    and each run starts from where the one before it left the schema); everything happens in
    one transaction, so a migration that fails changes nothing.

    Raises ConfigError for a bad schema name or an unknown `to` (before connecting),
    PgqError when the schema is at a revision this version of pgq does not know, and
    DatabaseError when the database cannot be reached or refuses a statement.

    Example:
        >>> import pgq
        >>> pgq.migrate("postgresql://localhost/app")  # doctest: +SKIP
        >>> pgq.migrate("postgresql://localhost/app", to="base")  # remove pgq  # doctest: +SKIP
    """
    schema = _checked_schema(schema)
    script = _script()
    order = _revisions(script)
    to = _checked_revision(to, order, "to")
    import psycopg
    import sqlalchemy as sa
    from alembic.runtime.environment import EnvironmentContext

    target = {"head": order[-1], "base": None}.get(to, to)
    found: list[str | None] = []  # the revision before, read under the lock

    def steps(heads: tuple[str, ...], _: MigrationContext) -> list[RevisionStep]:
        current = _current_revision(heads, order, schema)
        found.append(current)
        at, goal = _position(current, order), _position(target, order)
        # The steps alembic's own command.upgrade and command.downgrade would run; chosen here,
        # once the lock is held, as only then is the revision the schema is at known.
        if goal > at:  # order[goal - 1] is the target, which is not base
            return script._upgrade_revs(order[goal - 1], current or "base")
        if goal < at:
            return script._downgrade_revs(target or "base", current)
        return []

    engine = sa.create_engine(
        "postgresql+psycopg://",
        creator=lambda: psycopg.connect(dsn),
        poolclass=sa.pool.NullPool,
    )
    try:
        with _ALEMBIC_LOCK, engine.connect() as connection:
            cfg = _config(schema)
            cfg.attributes["connection"] = connection
            with EnvironmentContext(cfg, script, fn=steps, destination_rev=to):
                script.run_env()
            connection.commit()
            schema_dropped = bool(cfg.attributes.get("schema_dropped", False))
    except sa.exc.DBAPIError as exc:
        raise DatabaseError(f"cannot migrate: {_first_line(exc.orig or exc)}") from exc
    except psycopg.Error as exc:
        raise DatabaseError(f"cannot migrate: {_first_line(exc)}") from exc
    finally:
        engine.dispose()
    [before] = found
    at, goal = _position(before, order), _position(target, order)
    return Migration(
        schema=schema,
        from_revision=before,
        to_revision=target,
        head=order[-1],
        direction="upgrade" if goal > at else "downgrade" if goal < at else None,
        schema_dropped=schema_dropped,
    )


def _current_revision(heads: tuple[str, ...], order: list[str], schema: str) -> str | None:
    if len(heads) > 1 or any(h not in order for h in heads):
        known = ", ".join(order)
        raise PgqError(
            f"schema {schema!r} is at revision {', '.join(heads)}, which this version of pgq "
            f"does not know (it has {known}): upgrade pgq, or migrate with the pgq that wrote it"
        )
    return heads[0] if heads else None


def _first_line(exc: BaseException) -> str:
    """The server's message without its LINE / DETAIL / HINT lines (kept in __cause__)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _position(revision: str | None, order: list[str]) -> int:
    """0 for base, 1 for the first revision, and so on."""
    return 0 if revision is None else order.index(revision) + 1


def schema_sql(*, schema: str = "pgq") -> str:
    """The DDL `migrate` would run on an empty database, as SQL text (alembic offline mode)."""
    schema = _checked_schema(schema)
    from alembic import command

    out = io.StringIO()
    with _ALEMBIC_LOCK:
        command.upgrade(_config(schema, out), "head", sql=True)
    return out.getvalue()
