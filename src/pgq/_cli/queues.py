"""`pgq queues`: list, show, pause, resume."""

from __future__ import annotations

from datetime import UTC

import click
from rich.console import Console
from rich.table import Table

import pgq
from pgq._cli.common import friendly, require_dsn

_queuedsn_option = click.option(
    "--dsn", envvar="PGQ_DSN", help="PostgreSQL connection string (default: $PGQ_DSN)."
)
_queueschema_option = click.option(
    "--schema", envvar="PGQ_SCHEMA", help="Schema holding pgq's tables ($PGQ_SCHEMA; pgq)."
)


@click.group(invoke_without_command=True)
@_queuedsn_option
@_queueschema_option
@click.pass_context
@friendly
def queues(ctx: click.Context, dsn: str | None, schema: str | None) -> None:
    """List queues (the default), show one, or pause / resume one."""
    ctx.obj = {"dsn": dsn, "schema": schema}  # given before the subcommand: they apply to it
    if ctx.invoked_subcommand is None:
        _print_queues(pgq.list_queues(require_dsn(dsn), schema=schema or "pgq"))


def _queue_target(dsn: str | None, schema: str | None) -> tuple[str, str]:
    """--dsn / --schema given after the subcommand, else before it, else the defaults."""
    given = click.get_current_context().find_object(dict) or {}
    return require_dsn(dsn or given.get("dsn")), schema or given.get("schema") or "pgq"


@queues.command("list")
@_queuedsn_option
@_queueschema_option
@friendly
def queues_list(dsn: str | None, schema: str | None) -> None:
    """Every queue: jobs by state, running against its cap, rate, circuit, paused, oldest job."""
    dsn, schema = _queue_target(dsn, schema)
    _print_queues(pgq.list_queues(dsn, schema=schema))


@queues.command("pause")
@click.argument("name")
@_queuedsn_option
@_queueschema_option
@friendly
def queues_pause(name: str, dsn: str | None, schema: str | None) -> None:
    """Stop claiming from a queue (it still accepts jobs; running jobs finish)."""
    dsn, schema = _queue_target(dsn, schema)
    changed = pgq.pause_queue(dsn, name, schema=schema)
    click.echo(f"queue {name!r} paused" if changed else f"queue {name!r} was already paused")


@queues.command("resume")
@click.argument("name")
@_queuedsn_option
@_queueschema_option
@friendly
def queues_resume(name: str, dsn: str | None, schema: str | None) -> None:
    """Let workers claim from a paused queue again."""
    dsn, schema = _queue_target(dsn, schema)
    changed = pgq.resume_queue(dsn, name, schema=schema)
    click.echo(f"queue {name!r} resumed" if changed else f"queue {name!r} was not paused")


@queues.command("show")
@click.argument("name")
@_queuedsn_option
@_queueschema_option
@friendly
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
