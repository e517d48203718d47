"""Queue policies enforced across several worker processes, as a user runs them: caps, rates,
circuits, pause from the CLI, a config edited under a running worker, and a flood that must
not hold back another queue."""

from __future__ import annotations

import itertools
import signal
import time
from pathlib import Path

import pytest

import pgq
from tests.integration._procs import Procs, count, live_workers, run_cli, wait_for
from tests.postgres import PgSchema


def spans(marker_dir: Path) -> list[tuple[float, float]]:
    """(start, end) of every tests.tasks.timed attempt, on the host's monotonic clock."""
    out = []
    for path in marker_dir.glob("span-*"):
        start, end = path.read_text().split()
        out.append((float(start), float(end)))
    return out


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    """The largest number of intervals that overlap at any instant."""
    edges = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    return max(itertools.accumulate(d for _, d in edges))


def enqueue_timed(pg: PgSchema, marker_dir: Path, n: int, seconds: float, queue: str) -> None:
    args = {"seconds": seconds, "marker_dir": str(marker_dir)}
    specs = [pgq.JobSpec(task="tests.tasks.timed", args=args, queue=queue) for _ in range(n)]
    pgq.enqueue_many(pg.dsn, specs, schema=pg.schema)


def stop_all(procs: Procs) -> None:
    for worker in procs.started:
        worker.signal(signal.SIGTERM)
    for worker in procs.started:
        assert worker.wait(30) == 0, worker.log()


@pytest.mark.timeout(120)
def test_cap_is_never_exceeded_by_racing_worker_processes(
    pg_schema: PgSchema, procs: Procs, marker_dir: Path, tmp_path: Path
) -> None:
    config = tmp_path / "pgq.toml"
    config.write_text("[queues.capped]\nconcurrency = 3\n")
    for _ in range(3):  # polling every 20 ms: every worker keeps asking while the cap is full
        procs.worker("--concurrency", "8", "--config", str(config), "--poll-interval", "0.02")
    wait_for(lambda: live_workers(pg_schema) == 3, timeout=30, what="3 workers to start")
    for n in range(1, 4):  # rounds: each one a burst that every idle worker races for
        enqueue_timed(pg_schema, marker_dir, 40, 0.03, "capped")
        wait_for(
            lambda n=n: count(pg_schema, "completed") == 40 * n,  # type: ignore[misc]
            timeout=60,
            what=f"round {n} to complete",
        )
    stop_all(procs)
    ran = spans(marker_dir)
    assert len(ran) == 120
    assert most_at_once(ran) == 3  # the cap was reached, and never passed
    pids = {p for (p,) in pg_schema.sql("select distinct worker_id from {schema}.job_events")}
    assert len(pids - {None}) >= 2  # the processes really raced


@pytest.mark.timeout(120)
def test_rate_limit_holds_across_worker_processes(
    pg_schema: PgSchema, procs: Procs, marker_dir: Path, tmp_path: Path
) -> None:
    config = tmp_path / "pgq.toml"
    config.write_text("[queues.rated]\nrate = { limit = 10, per = 1.0 }\n")
    for _ in range(2):
        procs.worker("--concurrency", "8", "--config", str(config))
    wait_for(lambda: live_workers(pg_schema) == 2, timeout=30, what="2 workers to start")
    enqueue_timed(pg_schema, marker_dir, 30, 0.0, "rated")
    wait_for(lambda: count(pg_schema, "completed") == 30, timeout=30, what="every job")
    stop_all(procs)
    starts = sorted(start for start, _ in spans(marker_dir))
    # Claims are limited to 10 in any second; a task starts a few ms after its claim, so any
    # 0.9 s of task starts stems from claims within one second.
    assert max(sum(1 for t in starts if s <= t < s + 0.9) for s in starts) <= 10
    assert 1.9 <= starts[-1] - starts[0] <= 6.0  # 30 jobs at 10/s: three windows, no stall
    [(attempts,)] = pg_schema.sql("select max(attempt) from {schema}.jobs")
    assert attempts == 1  # jobs over the limit waited; they used no attempt


@pytest.mark.timeout(120)
def test_open_circuit_stops_attempts_while_a_healthy_queue_keeps_running(
    pg_schema: PgSchema, procs: Procs, marker_dir: Path, tmp_path: Path
) -> None:
    config = tmp_path / "pgq.toml"
    config.write_text(
        "[queues.flaky]\n"
        "circuit = { failures = 4, window = 30.0, cooldown = 300.0, on = ['ConnectionError'] }\n"
        "[queues.capped]\n"
    )
    for _ in range(2):
        procs.worker("--concurrency", "2", "--config", str(config))
    wait_for(lambda: live_workers(pg_schema) == 2, timeout=30, what="2 workers to start")
    specs = [pgq.JobSpec(task="tests.tasks.downstream_down", queue="flaky") for _ in range(100)]
    flaky = [e.id for e in pgq.enqueue_many(pg_schema.dsn, specs, schema=pg_schema.schema)]
    wait_for(
        lambda: any(q.circuit_state == "open" for q in queues(pg_schema)),
        timeout=30,
        what="the circuit to open",
    )
    enqueue_timed(pg_schema, marker_dir, 200, 0.0, "capped")
    wait_for(lambda: count(pg_schema, "completed") == 200, timeout=30, what="the healthy queue")
    time.sleep(1.0)
    stop_all(procs)
    [(attempts, untouched)] = pg_schema.sql(
        "select sum(attempt), count(*) filter (where attempt = 0)"
        " from {schema}.jobs where id = any(%s)",
        (flaky,),
    )
    # Four failures open it; each worker may have had its first claim's jobs in flight then.
    assert 4 <= attempts <= 4 + 2 * 4
    assert untouched >= 100 - 12
    info = {q.name: q for q in queues(pg_schema)}["flaky"]
    assert info.circuit_state == "open"
    assert info.circuit_reason is not None and "ConnectionError" in info.circuit_reason
    listing = run_cli("queues", "--dsn", pg_schema.dsn, "--schema", pg_schema.schema)
    assert listing.returncode == 0, listing.stderr
    assert "flaky: circuit open since" in listing.stdout
    shown = run_cli("queues", "show", "flaky", "--dsn", pg_schema.dsn, "--schema", pg_schema.schema)
    assert shown.returncode == 0, shown.stderr
    assert "circuit closed → open" in shown.stdout and "4 failures within 30s" in shown.stdout
    missing = run_cli(
        "queues", "show", "nope", "--dsn", pg_schema.dsn, "--schema", pg_schema.schema
    )
    assert missing.returncode == 1
    assert missing.stderr.strip() == "pgq: error: no queue 'nope': it has no jobs and no policy"


@pytest.mark.timeout(120)
def test_an_open_circuit_never_starves_a_queue_the_config_does_not_name(
    pg_schema: PgSchema, procs: Procs, tmp_path: Path
) -> None:
    """Issue #9, 1a: two workers with no --queue and a config naming only the sick queue.
    The healthy queue (no policy) runs as fast as with no sick queue beside it."""
    config = tmp_path / "pgq.toml"
    config.write_text(
        "[queues.sick]\ncircuit = { failures = 3, window = 30.0, cooldown = 3.0, probes = 1 }\n"
    )
    specs = [pgq.JobSpec(task="tests.tasks.times_out", queue="sick") for _ in range(40)]
    pgq.enqueue_many(pg_schema.dsn, specs, schema=pg_schema.schema)
    for _ in range(2):
        procs.worker("--concurrency", "4", "--config", str(config))
    wait_for(lambda: live_workers(pg_schema) == 2, timeout=30, what="2 workers to start")
    wait_for(
        lambda: any(q.circuit_state == "open" for q in queues(pg_schema)),
        timeout=30,
        what="the sick queue's circuit to open",
    )
    healthy = [pgq.JobSpec(task="tests.tasks.noop", queue="healthy") for _ in range(300)]
    started = time.monotonic()
    pgq.enqueue_many(pg_schema.dsn, healthy, schema=pg_schema.schema)
    wait_for(
        lambda: count(pg_schema, "completed") == 300,
        timeout=30,
        what="the healthy queue to drain beside the open circuit",
    )
    took = time.monotonic() - started
    stop_all(procs)
    assert took < 10.0, f"300 no-op jobs took {took:.1f}s beside an open circuit"
    [(sick_attempts,)] = pg_schema.sql(
        "select sum(attempt) from {schema}.jobs where queue = 'sick'"
    )
    assert sick_attempts < 40  # the circuit held most sick jobs back meanwhile


@pytest.mark.timeout(90)
def test_pause_from_the_cli_stops_claims_of_a_running_worker(
    pg_schema: PgSchema, procs: Procs
) -> None:
    procs.worker("--concurrency", "2")
    wait_for(lambda: live_workers(pg_schema) == 1, timeout=30, what="the worker to start")
    cli = ("--dsn", pg_schema.dsn, "--schema", pg_schema.schema)
    paused = run_cli("queues", *cli, "pause", "default")  # options before the subcommand too
    assert (paused.returncode, paused.stdout.strip()) == (0, "queue 'default' paused")
    pg_schema.enqueue_noops(5)
    pg_schema.enqueue_noops(3, queue="other")
    wait_for(lambda: count(pg_schema, "completed") == 3, timeout=20, what="the other queue")
    time.sleep(1.5)
    assert pg_schema.states() == {"completed": 3, "queued": 5}
    listing = run_cli("queues", *cli)
    assert listing.returncode == 0, listing.stderr
    [row] = [
        line.split() for line in listing.stdout.splitlines() if line.split()[:1] == ["default"]
    ]
    assert row[1] == "5" and row[9] == "yes"
    resumed = run_cli("queues", "resume", "default", *cli)
    assert (resumed.returncode, resumed.stdout.strip()) == (0, "queue 'default' resumed")
    wait_for(lambda: count(pg_schema, "completed") == 8, timeout=20, what="the resumed queue")
    again = run_cli("queues", "pause", "", *cli)
    assert again.returncode == 1 and again.stderr.startswith("pgq: error: queue name")
    stop_all(procs)


@pytest.mark.timeout(90)
def test_a_config_edit_reaches_a_running_worker_process(
    pg_schema: PgSchema, procs: Procs, tmp_path: Path
) -> None:
    config = tmp_path / "pgq.toml"
    config.write_text("[queues.emails]\nconcurrency = 2\nrate = { limit = 10 }\n")
    worker = procs.worker("--config", str(config))
    wait_for(lambda: live_workers(pg_schema) == 1, timeout=30, what="the worker to start")

    def emails() -> pgq.QueueInfo:
        return {q.name: q for q in queues(pg_schema)}["emails"]

    wait_for(lambda: emails().policy, timeout=10, what="the policy to be written")
    config.write_text("[queues.emails]\nconcurrency = 4\nrate = { limit = 25, per = 5.0 }\n")
    info = wait_for(
        lambda: (q := emails()).policy and q.policy.rate == pgq.Rate(25, 5.0) and q,
        timeout=5,
        what="the new rate to apply",
    )
    assert info.policy is not None and info.policy.concurrency == 2  # kept until a restart
    wait_for(lambda: emails().restart_required, timeout=5, what="restart required")
    assert emails().restart_required == ["queues.emails.concurrency 2 -> 4"]
    listing = run_cli("queues", "--dsn", pg_schema.dsn, "--schema", pg_schema.schema)
    assert "emails: restart required: queues.emails.concurrency 2 -> 4" in listing.stdout
    config.write_text("[queues.emails]\nrate = { limit = 0 }\n")
    wait_for(lambda: "config refused" in worker.log(), timeout=5, what="the refusal")
    assert "queues.emails.rate.limit" in worker.log()
    assert emails().policy.rate == pgq.Rate(25, 5.0)  # type: ignore[union-attr]
    assert worker.alive()
    stop_all(procs)


@pytest.mark.timeout(120)
def test_a_flood_does_not_hold_back_a_quiet_queue(pg_schema: PgSchema, procs: Procs) -> None:
    specs = [pgq.JobSpec(task="tests.tasks.noop", queue="flood") for _ in range(30_000)]
    pgq.enqueue_many(pg_schema.dsn, specs, schema=pg_schema.schema)
    procs.worker("--concurrency", "4")
    wait_for(lambda: count(pg_schema, "completed") > 2_000, timeout=30, what="the drain")
    [quiet] = pg_schema.enqueue_noops(1, queue="quiet")
    wait_for(lambda: count(pg_schema, "completed") == 30_001, timeout=90, what="every job")
    stop_all(procs)
    [(overtaken, left)] = pg_schema.sql(
        "select count(*) filter (where f.finished_at < q.finished_at),"
        "       count(*) filter (where f.finished_at > q.finished_at)"
        "  from {schema}.jobs as f, {schema}.jobs as q"
        " where q.id = %s and f.queue = 'flood' and f.finished_at > q.created_at",
        (quiet,),
    )
    # The quiet job is claimed by the next claim and skips the flood's buffered jobs: what
    # finishes before it is a few claims' worth of flood jobs, never the thousands waiting.
    assert left > 10_000, "the flood ended too soon to tell"
    assert overtaken < 2_000


@pytest.mark.timeout(120)
def test_a_flood_arriving_under_a_running_worker_does_not_hold_back_a_quiet_queue(
    pg_schema: PgSchema, procs: Procs
) -> None:
    """Issue #9, 1b: the worker runs first (no --queue); the flood arrives in batches while
    quiet jobs are enqueued one per transaction. Each quiet job overtakes the flood's buffer."""
    procs.worker("--concurrency", "4")
    wait_for(lambda: live_workers(pg_schema) == 1, timeout=30, what="the worker to start")
    flood = [pgq.JobSpec(task="tests.tasks.noop", queue="flood") for _ in range(10_000)]
    quiet: list[int] = []
    for _ in range(3):
        pgq.enqueue_many(pg_schema.dsn, flood, schema=pg_schema.schema)
        for _ in range(5):
            quiet += pg_schema.enqueue_noops(1, queue="quiet")
            time.sleep(0.02)
    wait_for(lambda: count(pg_schema, "completed") == 30_015, timeout=90, what="every job")
    stop_all(procs)
    rows = pg_schema.sql(
        "select q.id,"
        "       (select count(*) from {schema}.jobs as f"
        "         where f.queue = 'flood' and f.finished_at > q.created_at"
        "           and f.finished_at < q.finished_at)"
        "  from {schema}.jobs as q where q.id = any(%s)",
        (quiet,),
    )
    # What finishes before a quiet job is a few completion batches (they share finished_at),
    # never the 10,000 flood jobs each batch brought.
    overtaken = sorted(n for _, n in rows)
    assert len(overtaken) == 15 and overtaken[-1] < 1_000, overtaken


def queues(pg: PgSchema) -> list[pgq.QueueInfo]:
    return pgq.list_queues(pg.dsn, schema=pg.schema)
