"""The `pgq` command (also `python -m pgq`). Uses pgq's public API only."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from datetime import UTC
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

import pgq
from pgq._config import setup_logging
from pgq._migrate import Migration, check_revision

F = TypeVar("F", bound=Callable[..., Any])

_dsn_option = click.option(
    "--dsn",
    envvar="PGQ_DSN",
    help="PostgreSQL connection string (default: $PGQ_DSN).",
)
_schema_option = click.option(
    "--schema",
    envvar="PGQ_SCHEMA",
    default="pgq",
    show_default=True,
    help="Schema holding pgq's tables ($PGQ_SCHEMA).",
)


def _require_dsn(dsn: str | None) -> str:
    if not dsn:
        raise click.UsageError("no database given: pass --dsn or set PGQ_DSN")
    return dsn


def _friendly(fn: F) -> F:
    """One clear line on stderr and exit 1 for pgq's own errors, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (pgq.PgqError, ValueError) as exc:
            click.echo(f"pgq: error: {exc}", err=True)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]  # same signature


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(pgq.__version__, prog_name="pgq")
def cli() -> None:
    """pgq: a job queue that needs nothing but PostgreSQL."""


@cli.command()
@_dsn_option
@_schema_option
@click.option(
    "--to",
    metavar="REVISION",
    default="head",
    show_default=True,
    help="Upgrade or downgrade to this revision: 0001, 0002, ..., head, or base (remove pgq).",
)
@_friendly
def migrate(dsn: str | None, schema: str, to: str) -> None:
    """Create, upgrade or downgrade pgq's tables."""
    try:
        check_revision(to, name="--to")
    except pgq.ConfigError as exc:  # a usage error, in one line: click's own takes four
        click.echo(f"pgq: error: {exc}", err=True)
        sys.exit(2)
    done = pgq.migrate(_require_dsn(dsn), schema=schema, to=to)
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


@cli.command()
@_schema_option
@_friendly
def schema(schema: str) -> None:
    """Print the DDL, for teams that run their own migration tool."""
    click.echo(pgq.schema_sql(schema=schema), nl=False)


@cli.command()
@click.argument("modules", nargs=-1, required=True)
@_dsn_option
@_schema_option
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
@_friendly
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
        _require_dsn(dsn),
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


_queue_dsn_option = click.option(
    "--dsn", envvar="PGQ_DSN", help="PostgreSQL connection string (default: $PGQ_DSN)."
)
_queue_schema_option = click.option(
    "--schema", envvar="PGQ_SCHEMA", help="Schema holding pgq's tables ($PGQ_SCHEMA; pgq)."
)


@cli.group(invoke_without_command=True)
@_queue_dsn_option
@_queue_schema_option
@click.pass_context
@_friendly
def queues(ctx: click.Context, dsn: str | None, schema: str | None) -> None:
    """List queues (the default), show one, or pause / resume one."""
    ctx.obj = {"dsn": dsn, "schema": schema}  # given before the subcommand: they apply to it
    if ctx.invoked_subcommand is None:
        _print_queues(pgq.list_queues(_require_dsn(dsn), schema=schema or "pgq"))


def _queue_target(dsn: str | None, schema: str | None) -> tuple[str, str]:
    """--dsn / --schema given after the subcommand, else before it, else the defaults."""
    given = click.get_current_context().find_object(dict) or {}
    return _require_dsn(dsn or given.get("dsn")), schema or given.get("schema") or "pgq"


@queues.command("list")
@_queue_dsn_option
@_queue_schema_option
@_friendly
def queues_list(dsn: str | None, schema: str | None) -> None:
    """Every queue: jobs by state, running against its cap, rate, circuit, paused, oldest job."""
    dsn, schema = _queue_target(dsn, schema)
    _print_queues(pgq.list_queues(dsn, schema=schema))


@queues.command("pause")
@click.argument("name")
@_queue_dsn_option
@_queue_schema_option
@_friendly
def queues_pause(name: str, dsn: str | None, schema: str | None) -> None:
    """Stop claiming from a queue (it still accepts jobs; running jobs finish)."""
    dsn, schema = _queue_target(dsn, schema)
    changed = pgq.pause_queue(dsn, name, schema=schema)
    click.echo(f"queue {name!r} paused" if changed else f"queue {name!r} was already paused")


@queues.command("resume")
@click.argument("name")
@_queue_dsn_option
@_queue_schema_option
@_friendly
def queues_resume(name: str, dsn: str | None, schema: str | None) -> None:
    """Let workers claim from a paused queue again."""
    dsn, schema = _queue_target(dsn, schema)
    changed = pgq.resume_queue(dsn, name, schema=schema)
    click.echo(f"queue {name!r} resumed" if changed else f"queue {name!r} was not paused")


@queues.command("show")
@click.argument("name")
@_queue_dsn_option
@_queue_schema_option
@_friendly
def queues_show(name: str, dsn: str | None, schema: str | None) -> None:
    """One queue: its policy, jobs by state, circuit, and its latest changes (circuit
    transitions with their reasons, pauses, policy writes)."""
    dsn, schema = _queue_target(dsn, schema)
    found = [q for q in pgq.list_queues(dsn, schema=schema) if q.name == name]
    if not found:
        raise pgq.ConfigError(f"no queue {name!r}: it has no jobs and no policy")
    [q] = found
    console = Console()
    counts = ", ".join(f"{state} {n}" for state, n in sorted(q.counts.items())) or "no jobs"
    console.print(f"queue {q.name}  paused={'yes' if q.paused else 'no'}  {counts}", markup=False)
    if q.policy is not None:
        settings = {
            k: v
            for k, v in (
                ("concurrency", q.policy.concurrency),
                ("rate", q.policy.rate),
                ("circuit", q.policy.circuit),
                ("max_attempts", q.policy.max_attempts),
                ("backoff", q.policy.backoff),
                ("timeout", q.policy.timeout),
                ("retention", q.policy.retention),
            )
            if v is not None
        }
        for key, value in settings.items():
            console.print(f"  {key}: {value}", markup=False, highlight=False)
    if q.policy is not None and q.policy.circuit is not None and q.circuit_since is not None:
        since = f"{q.circuit_since.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
        console.print(
            f"  circuit {q.circuit_state} since {since}: {q.circuit_reason or '-'}", markup=False
        )
    for line in q.restart_required:
        console.print(f"  restart required: {line}", markup=False, highlight=False)
    if not q.events:
        return
    table = Table("at (UTC)", "change", "worker", "reason", box=None)
    for e in reversed(q.events):  # oldest first, as a timeline reads
        change = e.kind if e.kind != "circuit" else f"circuit {e.from_state} → {e.to_state}"
        table.add_row(
            f"{e.at.astimezone(UTC):%Y-%m-%d %H:%M:%S.%f}"[:-3],
            change,
            e.worker_id or "",
            e.reason or "",
        )
    console.print(table)


def _print_queues(infos: list[pgq.QueueInfo]) -> None:
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)  # piped or captured: never cut a column
    if not infos:
        console.print("no queues yet: nothing was enqueued and no worker declared a policy")
        return
    table = Table(
        "queue",
        "queued",
        "retrying",
        "running",
        "completed",
        "dead",
        "cancelled",
        "rate",
        "circuit",
        "paused",
        "oldest",
        box=None,
    )
    notes: list[str] = []
    for q in infos:
        policy = q.policy
        cap = policy.concurrency if policy and policy.concurrency else None
        rate = policy.rate if policy else None
        has_circuit = policy is not None and policy.circuit is not None
        table.add_row(
            q.name,
            str(q.counts.get("queued", 0)),
            str(q.counts.get("retrying", 0)),
            f"{q.running}/{cap}" if cap else str(q.running),
            str(q.counts.get("completed", 0)),
            str(q.counts.get("dead", 0)),
            str(q.counts.get("cancelled", 0)),
            f"{rate.limit}/{rate.per:g}s" if rate else "-",
            _circuit_cell(q) if has_circuit else "-",
            "yes" if q.paused else "no",
            _age(q.oldest_runnable_age_s),
        )
        if has_circuit and q.circuit_since is not None and q.circuit_state != "closed":
            since = f"{q.circuit_since.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
            notes.append(f"{q.name}: circuit {q.circuit_state} since {since}: {q.circuit_reason}")
        notes.extend(f"{q.name}: restart required: {change}" for change in q.restart_required)
    console.print(table)
    for note in notes:
        console.print(note, markup=False, highlight=False, soft_wrap=True)


def _circuit_cell(q: pgq.QueueInfo) -> str:
    if q.circuit_since is None:
        return q.circuit_state
    return f"{q.circuit_state} since {q.circuit_since.astimezone(UTC):%H:%M:%S}"


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


@cli.group()
def jobs() -> None:
    """Inspect and replay jobs."""


@jobs.command("list")
@_dsn_option
@_schema_option
@click.option("--queue")
@click.option("--state", type=click.Choice([s.value for s in pgq.State]))
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@_friendly
def jobs_list(
    dsn: str | None, schema: str, queue: str | None, state: str | None, limit: int
) -> None:
    """Newest jobs first."""
    records = pgq.list_jobs(_require_dsn(dsn), queue=queue, state=state, limit=limit, schema=schema)
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
@_dsn_option
@_schema_option
@_friendly
def jobs_show(job_id: int, dsn: str | None, schema: str) -> None:
    """A job's state and its event timeline."""
    record = pgq.get_job(_require_dsn(dsn), job_id, schema=schema)
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
@_dsn_option
@_schema_option
@_friendly
def jobs_retry(job_ids: tuple[int, ...], dsn: str | None, schema: str) -> None:
    """Replay dead or cancelled jobs."""
    target = _require_dsn(dsn)
    _each(job_ids, lambda i: pgq.retry_job(target, i, schema=schema), "replayed")


@jobs.command("cancel")
@click.argument("job_ids", type=int, nargs=-1, required=True)
@_dsn_option
@_schema_option
@_friendly
def jobs_cancel(job_ids: tuple[int, ...], dsn: str | None, schema: str) -> None:
    """Cancel queued or retrying jobs."""
    target = _require_dsn(dsn)
    _each(job_ids, lambda i: pgq.cancel_job(target, i, schema=schema), "cancelled")


@cli.command()
@_dsn_option
@click.option("--jobs", "n_jobs", type=click.IntRange(min=10), default=3000, show_default=True)
@click.option("--concurrency", type=click.IntRange(min=1), default=10, show_default=True)
@_friendly
def demo(dsn: str | None, n_jobs: int, concurrency: int) -> None:
    """Run the main job end to end (an embedded PostgreSQL when no DSN is set)."""
    from pgq._demo import run_demo

    run_demo(dsn, n_jobs=n_jobs, concurrency=concurrency)


def main() -> None:
    cli(prog_name="pgq")
