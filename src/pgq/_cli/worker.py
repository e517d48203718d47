"""`pgq worker`."""

from __future__ import annotations

import sys

import click

import pgq
from pgq._cli.common import dsn_option, friendly, require_dsn, schema_option
from pgq._cli.logs import setup_logging


@click.command()
@click.argument("modules", nargs=-1, required=True)
@dsn_option
@schema_option
@click.option("--queue", "queues", multiple=True, help="Serve only this queue (repeatable).")
@click.option("--concurrency", type=click.IntRange(min=1), default=10, show_default=True)
@click.option(
    "--lease",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    help="Lease, seconds.",
)
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Seconds in-flight jobs get on SIGTERM.",
)
@click.option(
    "--burst", is_flag=True, help="Exit 0 once nothing is runnable and nothing is in flight."
)
@click.option(
    "--max-wait",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    help="With --burst: wait this long for jobs due soon.",
)
@click.option(
    "--poll-interval", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True
)
@click.option(
    "--connect-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
)
@click.option(
    "--log-level",
    default="INFO",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
@click.option(
    "--log-format", default="text", show_default=True, type=click.Choice(["text", "json"])
)
@click.option(
    "--config",
    envvar="PGQ_CONFIG",
    type=click.Path(dir_okay=False),
    help="Queue policies, one [queues.NAME] table each ($PGQ_CONFIG); reloaded while running.",
)
@friendly
def worker(
    modules: tuple[str, ...],
    dsn: str | None,
    schema: str,
    queues: tuple[str, ...],
    concurrency: int,
    lease: float,
    grace: float,
    burst: bool,
    max_wait: float,
    poll_interval: float,
    connect_timeout: float,
    log_level: str,
    log_format: str,
    config: str | None,
) -> None:
    """Run jobs of the tasks in MODULES (e.g. myapp.tasks) until SIGTERM / SIGINT."""
    setup_logging(log_level, "json" if log_format == "json" else "text")
    if "." not in sys.path and "" not in sys.path:
        sys.path.insert(0, "")  # task modules are found from the working directory, as python -m
    w = pgq.Worker(
        require_dsn(dsn),
        tasks=list(modules),
        queues=list(queues) or None,
        concurrency=concurrency,
        lease=lease,
        grace=grace,
        poll_interval=poll_interval,
        schema=schema,
        connect_timeout=connect_timeout,
        config=config,
    )
    if burst:
        w.run_until_empty(max_wait=max_wait)
    else:
        w.run()
