"""Alembic environment for pgq's own schema.

pgq.migrate() passes the target schema and a connection in `config.attributes`; offline mode
(`pgq schema`) passes only the schema. The version table lives in pgq's schema, so pgq's
revisions never mix with the application's own alembic history.
"""

from __future__ import annotations

from sqlalchemy import text

from alembic import context

config = context.config
schema: str = config.attributes.get("schema", "pgq")

# Serialises concurrent `pgq migrate` runs (many workers starting at once): an arbitrary
# constant key, "pgq" in ASCII, held for the migration transaction.
_MIGRATE_LOCK_KEY = 0x706771


def run_offline() -> None:
    context.configure(
        url="postgresql+psycopg://",
        literal_binds=True,
        version_table_schema=schema,
        transaction_per_migration=False,
    )
    with context.begin_transaction():
        context.execute(f'create schema if not exists "{schema}"')
        context.run_migrations(schema=schema)


def run_online() -> None:
    connection = config.attributes["connection"]
    context.configure(
        connection=connection, version_table_schema=schema, transaction_per_migration=False
    )
    with context.begin_transaction():
        # Taken before alembic reads the version table, so a second `pgq migrate` waits and
        # then finds the schema at head.
        connection.execute(text("select pg_advisory_xact_lock(:k)"), {"k": _MIGRATE_LOCK_KEY})
        connection.execute(text(f'create schema if not exists "{schema}"'))
        context.run_migrations(schema=schema)


if context.is_offline_mode():
    run_offline()
else:
    run_online()
