"""`pgq migrate` and `pgq schema`."""

from __future__ import annotations

import sys

import click

import pgq
from pgq._cli.common import dsn_option, friendly, require_dsn, schema_option
from pgq._migrate import Migration, check_revision


@click.command()
@dsn_option
@schema_option
@click.option(
    "--to",
    metavar="REVISION",
    default="head",
    show_default=True,
    help="Upgrade or downgrade to this revision: 0001, 0002, ..., head, or base (remove pgq).",
)
@friendly
def migrate(dsn: str | None, schema: str, to: str) -> None:
    """Create, upgrade or downgrade pgq's tables."""
    try:
        check_revision(to, name="--to")
    except pgq.ConfigError as exc:  # a usage error, in one line: click's own takes four
        click.echo(f"pgq: error: {exc}", err=True)
        sys.exit(2)
    done = pgq.migrate(require_dsn(dsn), schema=schema, to=to)
    click.echo(_migrated(done))


def _migrated(m: Migration) -> str:
    """What `pgq migrate` did, in one line."""

    def name(revision: str | None) -> str:
        if revision is None:
            return "base"
        return f"{revision} (head)" if revision == m.head else revision

    if m.direction is None:
        did = f"already at {name(m.to_revision)}"
    else:
        did = f"{m.direction}d from {name(m.from_revision)} to {name(m.to_revision)}"
    if m.to_revision == m.head:
        return f"pgq schema {m.schema!r} is up to date: {did}"
    line = f"pgq schema {m.schema!r}: {did}"
    if m.to_revision is None and m.schema_dropped:
        line += "; no pgq object is left, and the schema, which pgq had created, is dropped"
    elif m.to_revision is None and m.direction is not None:
        line += "; no pgq object is left in it (the schema itself is kept)"
    return line


@click.command()
@schema_option
@friendly
def schema(schema: str) -> None:
    """Print the DDL, for teams that run their own migration tool."""
    click.echo(pgq.schema_sql(schema=schema), nl=False)
