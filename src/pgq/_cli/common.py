"""What every command shares: the --dsn and --schema options, and one line for an error."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

import pgq

F = TypeVar("F", bound=Callable[..., Any])

dsn_option = click.option(
    "--dsn",
    envvar="PGQ_DSN",
    help="PostgreSQL connection string (default: $PGQ_DSN).",
)
schema_option = click.option(
    "--schema",
    envvar="PGQ_SCHEMA",
    default="pgq",
    show_default=True,
    help="Schema holding pgq's tables ($PGQ_SCHEMA).",
)


def require_dsn(dsn: str | None) -> str:
    if not dsn:
        raise click.UsageError("no database given: pass --dsn or set PGQ_DSN")
    return dsn


def friendly(fn: F) -> F:
    """One clear line on stderr and exit 1 for pgq's own errors, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (pgq.PgqError, ValueError) as exc:
            click.echo(f"pgq: error: {exc}", err=True)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]  # same signature
