"""`pgq jobs`: list, show, retry, cancel."""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import UTC

import click
from rich.console import Console
from rich.table import Table

import pgq
from pgq._cli.common import dsn_option, friendly, require_dsn, schema_option


@click.group()
def jobs() -> None:
    """Inspect and replay jobs."""


@jobs.command("list")
@dsn_option
@schema_option
@click.option("--queue")
@click.option("--state", type=click.Choice([s.value for s in pgq.State]))
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@friendly
def jobs_list(
    dsn: str | None, schema: str, queue: str | None, state: str | None, limit: int
) -> None:
    """Newest jobs first."""
    records = pgq.list_jobs(require_dsn(dsn), queue=queue, state=state, limit=limit, schema=schema)
    table = Table("id", "queue", "task", "state", "attempt", "run_at (UTC)", "last error", box=None)
    for r in records:
        table.add_row(
            str(r.id),
            r.queue,
            r.task,
            r.state,
            f"{r.attempt}/{r.max_attempts or '-'}",
            f"{r.run_at.astimezone(UTC):%Y-%m-%d %H:%M:%S}",
            (r.last_error or "")[:60],
        )
    Console().print(table)


@jobs.command("show")
@click.argument("job_id", type=int)
@dsn_option
@schema_option
@friendly
def jobs_show(job_id: int, dsn: str | None, schema: str) -> None:
    """A job's state and its event timeline."""
    record = pgq.get_job(require_dsn(dsn), job_id, schema=schema)
    if record is None:
        raise pgq.JobNotFound(f"no job with id {job_id}")
    print_job(record)


def print_job(record: pgq.JobRecord, console: Console | None = None) -> None:
    """Print a job and its timeline (also used by `pgq demo`)."""
    console = console or Console()
    console.print(
        f"[bold]job {record.id}[/bold]  {record.task}  queue={record.queue}  "
        f"state=[bold]{record.state}[/bold]  attempt {record.attempt}/{record.max_attempts or '-'}"
    )
    console.print(f"  args: {record.args}")
    if record.last_error:
        console.print(f"  last error: {record.last_error}")
    table = Table("at (UTC)", "transition", "attempt", "worker", "error", box=None)
    day = None
    for e in record.events:
        at = e.at.astimezone(UTC)
        stamp = f"{at:%H:%M:%S.%f}"[:-3]
        if at.date() != day:  # the date once per day, so rows stay narrow
            day = at.date()
            stamp = f"{at:%Y-%m-%d} {stamp}"
        table.add_row(
            stamp,
            f"{e.from_state or '∅'} → {e.to_state}",
            str(e.attempt),
            e.worker_id or "",
            e.error or "",
        )
    console.print(table)


def _each(ids: tuple[int, ...], fn: Callable[[int], pgq.JobRecord], verb: str) -> None:
    failed = False
    for job_id in ids:
        try:
            record = fn(job_id)
            click.echo(f"job {job_id}: {verb}, now {record.state}")
        except (pgq.JobNotFound, pgq.InvalidTransition) as exc:
            click.echo(f"pgq: error: {exc}", err=True)
            failed = True
    if failed:
        sys.exit(1)


@jobs.command("retry")
@click.argument("job_ids", type=int, nargs=-1, required=True)
@dsn_option
@schema_option
@friendly
def jobs_retry(job_ids: tuple[int, ...], dsn: str | None, schema: str) -> None:
    """Replay dead or cancelled jobs."""
    target = require_dsn(dsn)
    _each(job_ids, lambda i: pgq.retry_job(target, i, schema=schema), "replayed")


@jobs.command("cancel")
@click.argument("job_ids", type=int, nargs=-1, required=True)
@dsn_option
@schema_option
@friendly
def jobs_cancel(job_ids: tuple[int, ...], dsn: str | None, schema: str) -> None:
    """Cancel queued or retrying jobs."""
    target = require_dsn(dsn)
    _each(job_ids, lambda i: pgq.cancel_job(target, i, schema=schema), "cancelled")
