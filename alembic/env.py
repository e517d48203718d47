"""Alembic environment for pgq's own schema.

pgq.migrate() passes the target schema and a connection in `config.attributes`; offline mode
(`pgq schema`) passes only the schema. The version table lives in pgq's schema, so pgq's
revisions never mix with the application's own alembic history.

Online, everything happens in one transaction under an advisory lock: creating the schema (and
marking it as pgq's), the revisions, and at base removing what alembic itself leaves behind.
"""

from __future__ import annotations

from sqlalchemy import Connection, text

from alembic import context
from pgq._core.domain import check_schema_name

config = context.config
schema: str = check_schema_name(config.attributes.get("schema", "pgq"))
# The only identifier in pgq's DDL: safe to quote by hand, as it matched ^[a-z_][a-z0-9_]{0,47}$.
quoted = f'"{schema}"'

VERSION_TABLE = "alembic_version"

# Serialises concurrent `pgq migrate` runs (many workers starting at once): an arbitrary
# constant key, "pgq" in ASCII, held for the migration transaction.
_MIGRATE_LOCK_KEY = 0x706771

# The comment on a schema that `pgq migrate` created. Only such a schema is dropped at base,
# and only when nothing is left in it: one that existed before (the DBA's, with its grants, or
# `public`) is never dropped.
CREATED_BY_PGQ = "created by pgq migrate; pgq migrate --to base drops it once it is empty"


def run_offline() -> None:
    context.configure(
        url="postgresql+psycopg://",
        literal_binds=True,
        version_table=VERSION_TABLE,
        version_table_schema=schema,
        transaction_per_migration=False,
    )
    with context.begin_transaction():
        context.execute(f"create schema if not exists {quoted}")
        context.run_migrations(schema=schema)


def run_online() -> None:
    connection = config.attributes["connection"]
    context.configure(
        connection=connection,
        version_table=VERSION_TABLE,
        version_table_schema=schema,
        transaction_per_migration=False,
    )
    with context.begin_transaction():
        # Taken before alembic reads the version table, so a second `pgq migrate` waits and
        # then finds the schema as the first one left it (at head, or gone).
        connection.execute(text("select pg_advisory_xact_lock(:k)"), {"k": _MIGRATE_LOCK_KEY})
        created = _create_schema(connection)
        context.run_migrations(schema=schema)
        if not context.get_context().get_current_heads():
            dropped = _remove_what_alembic_leaves(connection)
            config.attributes["schema_dropped"] = dropped and not created


def _create_schema(connection: Connection) -> bool:
    """Create the schema, marked as pgq's, unless it exists. True if it was created here."""
    exists = connection.execute(
        text("select exists (select from pg_namespace where nspname = :schema)"),
        {"schema": schema},
    ).scalar_one()
    if exists:
        return False
    connection.execute(text(f"create schema {quoted}"))
    connection.execute(text(f"comment on schema {quoted} is '{CREATED_BY_PGQ}'"))
    return True


def _remove_what_alembic_leaves(connection: Connection) -> bool:
    """At base: drop the version table (alembic only empties it), then the schema if pgq made it
    and nothing else is in it. True if the schema was dropped."""
    connection.execute(text(f"drop table if exists {quoted}.{VERSION_TABLE}"))
    # Every object in a schema depends on it with deptype 'n'; these are exactly what would make
    # DROP SCHEMA ... RESTRICT fail (an application's table, a function, an extension).
    is_ours, is_empty = connection.execute(
        text(
            "select coalesce(obj_description(n.oid, 'pg_namespace'), '') = :mark,"
            "       not exists (select"
            "                     from pg_depend"
            "                    where refclassid = 'pg_namespace'::regclass"
            "                      and refobjid = n.oid"
            "                      and deptype = 'n')"
            "  from pg_namespace as n"
            " where n.nspname = :schema"
        ),
        {"mark": CREATED_BY_PGQ, "schema": schema},
    ).one()
    if not (is_ours and is_empty):
        return False
    connection.execute(text(f"drop schema {quoted} restrict"))
    return True


if context.is_offline_mode():
    run_offline()
else:
    run_online()
