"""The `pgq` command (also `python -m pgq`): one module per command group. The CLI uses pgq's
public API only (import-linter checks it)."""

from __future__ import annotations

import click

import pgq
from pgq._cli.demo import demo
from pgq._cli.jobs import jobs
from pgq._cli.queues import queues
from pgq._cli.schema import migrate, schema
from pgq._cli.worker import worker


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(pgq.__version__, prog_name="pgq")
def cli() -> None:
    """pgq: a job queue that needs nothing but PostgreSQL."""


for command in (migrate, schema, worker, queues, jobs, demo):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="pgq")
