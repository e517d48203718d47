"""Queue policies, many queues and fairness (issue #4 "Speed"): pgq only.

    python3 benchmarks/policies.py [--reps 3] [--scenarios policy-drain,many-queues,fairness]
                                   [--dsn DSN] [--quick] [--json-out FILE]
                                   [--fairness-conditions a,b,c,d]
                                   [--fairness-queues all|named] [--fairness-concurrency 8]

Scenarios (every run in a fresh database; reps interleaved, variant order rotating per rep):

- ``policy-drain``: 20,000 pre-enqueued no-op jobs drained by one worker process (concurrency
  10) from a queue without a policy, and from ``pgq.Queue("capped", concurrency=1000,
  rate=pgq.Rate(1_000_000, per=1.0))`` (limits far above the load: they never bind, but every
  claim pays for them). Target: the policy drain within 15% of the plain one.
- ``many-queues``: 20,000 no-op jobs in one queue vs 1,000 in each of 20 queues, one worker
  process serving every queue (``queues=None``), and the 20 queues named explicitly.
  Target: within 15% of the one-queue drain.
- ``fairness``: one worker process; 200 quiet no-op jobs enqueued 20 ms apart, one
  autocommitted enqueue each. Pickup, two ways: the job's ``running`` event ``at`` minus its
  ``created_at`` (both the database clock); and, as issue #9 and ``peers.py``'s ``latency``
  measure it, the task body's start (``time.time()`` in the worker) minus the client's
  ``time.time()`` taken just before the enqueue call. (a) quiet alone; (b) beside a flood a
  producer process keeps fed at 85% of the worker's measured flood capacity, in batches every
  10 ms (no backlog builds); (c) beside a 200,000-job flood backlog enqueued before the worker
  starts; (d) beside a 200,000-job backlog that arrives while the worker runs: the worker has
  been registered and idle for 2 s when a producer process (``_burst``) enqueues the flood as
  10 back-to-back ``enqueue_many`` batches of 20,000, one transaction each, and the quiet jobs
  start 1 s after its first batch committed, so they are picked up while the backlog builds
  and drains (PERFORMANCE.md: this, not (c), is the condition users hit). Flood jobs sleep
  1 ms. Target: p99 (c) and p99 (d) each within 2x of p99 (b). ``--fairness-conditions d``
  runs (d) alone; ``b`` includes the capacity drain it needs.

  The worker's shape is the same for every fairness condition and for the capacity drain that
  sizes (b)'s flood: by default ``queues=None`` (it serves every queue, finding "flood" and
  "quiet" by NOTIFY and by polling for runnable queues) and ``concurrency=8``, the shape users
  run and issue #9 measures. Only these two queues ever hold jobs, so the conditions mean what
  they meant with the queues named; ``--fairness-queues named --fairness-concurrency 10`` runs
  the earlier shape (``queues=["flood", "quiet"]``, concurrency 10) for comparison.

Drains are timed from the database: the first ``running`` event to the last ``finished_at``;
every job must be ``completed`` or the run is an error. The report (Markdown) goes to stdout,
progress to stderr, raw results and worker logs to ``benchmarks/.runs/policies-<stamp>/``.

Runs with pgq's environment (``.venv`` at the repository root): another ``python3`` re-runs
this script with it. The same file is the worker and producer subprocesses (``_worker``,
``_flood``, ``_burst``). PostgreSQL is found as in ``peers.py`` (``bench_server.py``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
VENV_PYTHON = REPO / ".venv" / "bin" / "python"

try:
    import psycopg

    import pgq
except ImportError:  # bootstrap: re-run with pgq's own environment
    if (
        not VENV_PYTHON.exists()
        or Path(sys.prefix).resolve() == VENV_PYTHON.parent.parent.resolve()
    ):
        raise
    os.execv(VENV_PYTHON, [str(VENV_PYTHON), __file__, *sys.argv[1:]])

sys.path.insert(0, str(REPO))  # the tasks must be `benchmarks.policy_tasks`, as the worker has them

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402

import _harness  # noqa: E402
from _harness import (  # noqa: E402
    BenchError,
    checkpoint,
    loadavg,
    machine,
    percentile,
    source_revision,
    tail,
)
from bench_server import Server, find_server  # noqa: E402

from benchmarks import policy_tasks  # noqa: E402

TASK_MODULE = "benchmarks.policy_tasks"
CONCURRENCY = 10  # policy-drain and many-queues
FAIR_QUEUES = ["flood", "quiet"]  # what --fairness-queues named serves
CAPPED = {"name": "capped", "concurrency": 1000, "rate": [1_000_000, 1.0]}
MANY = [f"q{i:02d}" for i in range(20)]


@dataclass(frozen=True)
class Sizes:
    drain: int = 20_000
    queues: int = 20
    calibrate: int = 20_000
    quiet: int = 200
    interval: float = 0.02
    idle: float = 2.0
    backlog: int = 200_000
    backlog_batch: int = 10_000
    flood_fraction: float = 0.85
    flood_tick: float = 0.01
    arriving_batches: int = 10  # (d): the backlog arrives as this many enqueue_many calls
    arriving_lead: float = 1.0  # (d): first quiet job this long after the first batch commit


QUICK = Sizes(drain=2_000, calibrate=5_000, quiet=50, backlog=20_000, arriving_lead=0.1)

# ---------------------------------------------------------------------------------------------
# subprocess side: a worker, and the flood producer


def emit(**fields: Any) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def queue_from(spec: str | dict[str, Any]) -> str | pgq.Queue:
    if isinstance(spec, str):
        return spec
    rate = spec.get("rate")
    return pgq.Queue(
        spec["name"],
        concurrency=spec.get("concurrency"),
        rate=pgq.Rate(rate[0], per=rate[1]) if rate else None,
    )


def child_worker(dsn: str, spec: dict[str, Any], mode: str) -> None:
    queues = spec["queues"]
    worker = pgq.Worker(
        dsn,
        tasks=[TASK_MODULE],
        queues=None if queues is None else [queue_from(q) for q in queues],
        concurrency=spec.get("concurrency", CONCURRENCY),
    )
    emit(ready=True)
    if mode == "drain":
        if not sys.stdin.readline():
            raise SystemExit("orchestrator went away before 'go'")
        worker.run_until_empty(max_wait=0.0)
        emit(done=True, completed=worker.stats.completed, claimed=worker.stats.claimed)
    else:
        worker.run()  # until SIGTERM
        emit(stopped=True, completed=worker.stats.completed)


def child_flood(dsn: str, rate: float, tick: float) -> None:
    """Feed the flood queue at `rate` jobs/s, one enqueue_many every `tick` s, until SIGTERM.

    Closed loop, so that no backlog builds: a batch is skipped (not made up later) while the
    flood queue already holds more than two batches' worth of runnable jobs. On a loaded
    machine the worker runs slower than its capacity measured alone; without this the
    "drained" flood turned into a backlog of thousands within seconds.
    """
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    hold = max(50, int(2 * rate * tick))
    with psycopg.connect(dsn, autocommit=True) as conn:
        emit(ready=True)
        start = time.perf_counter()
        owed = 0.0
        sent = skipped = batches = 0
        last = start
        while not stop.is_set():
            batches += 1
            delay = start + batches * tick - time.perf_counter()
            if delay > 0:
                stop.wait(delay)
            now = time.perf_counter()
            owed += rate * (now - last)
            last = now
            due = int(owed)
            owed -= due
            if due <= 0:
                continue
            (backlog,) = conn.execute(FLOOD_BACKLOG_SQL).fetchone() or (0,)
            if backlog > hold:
                skipped += due
                continue
            # autocommit: one statement, one transaction per batch
            pgq.enqueue_many(conn, [pgq.JobSpec(task=policy_tasks.flood)] * due)
            sent += due
        emit(enqueued=sent, skipped=skipped, seconds=time.perf_counter() - start)


def child_burst(dsn: str, total: int, batches: int) -> None:
    """After "go", enqueue `total` flood jobs as `batches` enqueue_many calls, back to back,
    one transaction each; report the first commit at once, and every commit at the end
    (time.time(), the clock the orchestrator stamps the quiet enqueues with)."""
    sizes = [total // batches + (1 if k < total % batches else 0) for k in range(batches)]
    specs = [pgq.JobSpec(task=policy_tasks.flood)] * max(sizes)
    with psycopg.connect(dsn, autocommit=True) as conn:
        emit(ready=True)
        if not sys.stdin.readline():
            raise SystemExit("orchestrator went away before 'go'")
        started = time.time()
        committed: list[float] = []
        for k, n in enumerate(sizes):
            with conn.transaction():
                pgq.enqueue_many(conn, specs[:n])
            committed.append(time.time())
            if k == 0:
                emit(first_commit=committed[0])
        emit(enqueued=sum(sizes), started=started, committed=committed)


# ---------------------------------------------------------------------------------------------
# orchestrator side


@dataclass
class Ctx:
    server: Server
    sizes: Sizes
    runs_dir: Path
    seq: int = 0
    # the fairness worker's shape (--fairness-queues, --fairness-concurrency)
    fair_queues: list[Any] | None = None
    fair_concurrency: int = 8

    def log_path(self, what: str) -> Path:
        self.seq += 1
        return self.runs_dir / f"{self.seq:04d}-{what}.log"


class Child(_harness.Child):
    """A subprocess of this script whose JSON stdout lines are read by a thread."""

    def __init__(self, ctx: Ctx, what: str, argv: list[str], env: dict[str, str] | None = None):
        full_env = dict(os.environ)
        full_env["PYTHONPATH"] = str(REPO)
        full_env.update(env or {})
        argv = [sys.executable, str(Path(__file__).resolve()), *argv]
        super().__init__(ctx.log_path(what), argv, full_env, REPO)

    def expect(self, key: str, timeout: float) -> dict[str, Any]:
        return self.wait_for(key, timeout)[0]

    def stop(self, timeout: float = 40.0) -> int:
        return super().stop(timeout)


def worker_child(
    ctx: Ctx,
    dsn: str,
    queues: list[Any] | None,
    mode: str,
    *,
    concurrency: int = CONCURRENCY,
    **env: str,
) -> Child:
    spec = json.dumps({"queues": queues, "concurrency": concurrency})
    return Child(
        ctx, f"worker-{mode}", ["_worker", "--dsn", dsn, "--spec", spec, "--mode", mode], env
    )


def one(dsn: str, sql: str, params: Sequence[Any] | None = None) -> tuple[Any, ...]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(sql, params).fetchone()  # type: ignore[arg-type]
    assert row is not None
    return tuple(row)


def prefill(dsn: str, task: pgq.Task[..., Any], by_queue: dict[str, int], batch: int) -> None:
    """Bulk-enqueue the backlog (enqueue_many, one transaction per batch), then confirm it."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for q, n in by_queue.items():
            for start in range(0, n, batch):
                k = min(batch, n - start)
                with conn.transaction():
                    pgq.enqueue_many(conn, [pgq.JobSpec(task=task, queue=q)] * k)
    want = sum(by_queue.values())
    (have,) = one(dsn, "select count(*) from pgq.jobs where state = 'queued'")
    if have != want:
        raise BenchError(f"prefill of {want} left {have} queued jobs")


def wait_registered(dsn: str, child: Child, timeout: float = 30.0) -> None:
    """Until the worker's row is in pgq.workers (it has connected and started)."""
    deadline = time.monotonic() + timeout
    while one(dsn, "select count(*) from pgq.workers")[0] < 1:
        if child.proc.poll() is not None:
            raise BenchError(f"worker exited {child.proc.returncode}:\n{tail(child.log)}")
        if time.monotonic() > deadline:
            raise BenchError(f"worker not registered within {timeout:.0f} s")
        time.sleep(0.05)


Metrics = dict[str, Any]


def drain(
    ctx: Ctx,
    dsn: str,
    by_queue: dict[str, int],
    queues: list[Any] | None,
    task: Any,
    *,
    concurrency: int = CONCURRENCY,
) -> Metrics:
    pgq.migrate(dsn)
    n = sum(by_queue.values())
    prefill(dsn, task, by_queue, ctx.sizes.backlog_batch)
    checkpoint(dsn)
    worker = worker_child(ctx, dsn, queues, "drain", concurrency=concurrency)
    try:
        worker.expect("ready", timeout=60)
        start = time.perf_counter()
        worker.go()
        worker.expect("done", timeout=300)
        wall = time.perf_counter() - start
    finally:
        worker.stop()
    done, first_run, last_done = one(
        dsn,
        "select count(*) filter (where state = 'completed'),"
        " (select extract(epoch from min(at)) from pgq.job_events where to_state = 'running'),"
        " extract(epoch from max(finished_at)) from pgq.jobs",
    )
    if done != n:
        raise BenchError(f"worker finished, but the database confirms {done} of {n} completed")
    seconds = float(last_done) - float(first_run)
    # A claim statement stamps its jobs' running events with its transaction's now(): the
    # distinct stamps count the claims that returned jobs.
    (claims,) = one(dsn, "select count(distinct at) from pgq.job_events where to_state = 'running'")
    return {
        "rate": n / seconds,
        "wall_rate": n / wall,
        "seconds": seconds,
        "per_claim": n / max(1, int(claims)),
    }


# -- fairness ---------------------------------------------------------------------------------


def enqueue_quiet(dsn: str, n: int, interval: float) -> list[float]:
    """Enqueue the quiet jobs; the client's time.time() taken just before each enqueue call."""
    sent: list[float] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        start = time.perf_counter()
        for i in range(n):
            delay = start + i * interval - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            sent.append(time.time())
            pgq.enqueue(conn, policy_tasks.quiet, {"i": i})  # autocommit: its own transaction
    return sent


QUIET_SQL = """
select (j.args->>'i')::int,
       extract(epoch from j.created_at),
       extract(epoch from e.at),
       extract(epoch from j.finished_at)
  from pgq.jobs j
  join pgq.job_events e on e.job_id = j.id and e.to_state = 'running' and e.attempt = 1
 where j.queue = 'quiet'
"""

FLOOD_IN_WINDOW_SQL = """
with w as (select min(created_at) as a, max(created_at) as b from pgq.jobs where queue = 'quiet')
select count(*), (select extract(epoch from b - a) from w)
  from pgq.job_events e join pgq.jobs j on j.id = e.job_id, w
 where j.queue = 'flood' and e.to_state = 'running' and e.at between w.a and w.b
"""

# Jobs claimed and not yet finished (running, waiting for a thread, or being written): what the
# worker holds. Served by jobs_leased_queue_idx.
HELD_SQL = "select count(*) from pgq.jobs where lease_expires_at is not null"

# Autovacuum's ANALYZE runs on pgq.jobs so far: the claim's plans depend on these statistics.
ANALYZED_SQL = (
    "select coalesce((select autoanalyze_count from pg_stat_user_tables"
    " where relid = 'pgq.jobs'::regclass), -1)"
)

FLOOD_BACKLOG_SQL = (
    "select count(*) from pgq.jobs where queue = 'flood' and state in ('queued', 'retrying')"
)


def fairness(ctx: Ctx, dsn: str, condition: str, flood_rate: float | None = None) -> Metrics:
    """One condition: 'alone', 'drained' (flood fed at flood_rate), 'backlog' (enqueued before
    the worker starts) or 'arriving' (enqueued while it runs)."""
    sizes = ctx.sizes
    pgq.migrate(dsn)
    notes: list[str] = []
    if condition == "backlog":
        prefill(dsn, policy_tasks.flood, {"flood": sizes.backlog}, sizes.backlog_batch)
        checkpoint(dsn)
    elif condition == "arriving":
        checkpoint(dsn)  # the new database's pages are not written back during the flood
    stamps = ctx.runs_dir / f"stamps-{ctx.seq + 1:04d}-{condition}.txt"
    stamps.write_text("")
    worker = worker_child(
        ctx,
        dsn,
        ctx.fair_queues,
        "serve",
        concurrency=ctx.fair_concurrency,
        BENCH_STAMP_FILE=str(stamps),
    )
    producer: Child | None = None
    samples: list[tuple[int, int]] = []  # (jobs the worker holds, flood backlog or -1)
    sampling = threading.Event()

    def sample() -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            while not sampling.wait(0.25):
                (held,) = conn.execute(HELD_SQL).fetchone() or (-1,)
                backlog = -1
                if condition == "drained":  # (c)'s backlog count would load the server
                    (backlog,) = conn.execute(FLOOD_BACKLOG_SQL).fetchone() or (-1,)
                samples.append((int(held), int(backlog)))

    flood_out: dict[str, Any] = {}
    sent: list[float] = []
    try:
        worker.expect("ready", timeout=60)
        wait_registered(dsn, worker)
        if condition == "drained":
            assert flood_rate is not None
            producer = Child(
                ctx,
                "flood-producer",
                [
                    "_flood",
                    "--dsn",
                    dsn,
                    "--rate",
                    f"{flood_rate:.1f}",
                    "--tick",
                    str(sizes.flood_tick),
                ],
            )
            producer.expect("ready", timeout=60)
        elif condition == "arriving":
            producer = Child(
                ctx,
                "flood-arriving",
                [
                    "_burst",
                    "--dsn",
                    dsn,
                    "--total",
                    str(sizes.backlog),
                    "--batches",
                    str(sizes.arriving_batches),
                ],
            )
            producer.expect("ready", timeout=60)
        time.sleep(sizes.idle)  # idle, or busy with the flood, before the first quiet job
        if condition == "arriving":
            assert producer is not None
            producer.go()  # the worker is registered and has been idle for sizes.idle
            first_commit = producer.expect("first_commit", timeout=120)["first_commit"]
            time.sleep(max(0.0, first_commit + sizes.arriving_lead - time.time()))
        if condition in ("backlog", "arriving"):
            (reltuples,) = one(
                dsn, "select reltuples from pg_class where oid = 'pgq.jobs'::regclass"
            )
            notes.append(
                f"planner's row estimate for pgq.jobs when the quiet jobs began: {reltuples:,.0f}"
            )
        threading.Thread(target=sample, daemon=True).start()
        sent = enqueue_quiet(dsn, sizes.quiet, sizes.interval)
        deadline = time.monotonic() + 120
        while (
            one(dsn, "select count(*) from pgq.jobs where queue = 'quiet' and state = 'completed'")[
                0
            ]
            < sizes.quiet
        ):
            if worker.proc.poll() is not None:
                raise BenchError(f"worker exited {worker.proc.returncode}:\n{tail(worker.log)}")
            if time.monotonic() > deadline:
                raise BenchError("quiet jobs not all completed within 120 s")
            time.sleep(0.05)
        sampling.set()
        (backlog_end,) = one(dsn, FLOOD_BACKLOG_SQL)
        (analyzed,) = one(dsn, ANALYZED_SQL)
        if condition == "drained":
            assert producer is not None
            producer.proc.send_signal(signal.SIGTERM)
            flood_out = producer.expect("enqueued", timeout=30)
        elif condition == "arriving":
            assert producer is not None
            flood_out = producer.expect("enqueued", timeout=300)  # all of it, every time
    finally:
        sampling.set()
        if producer is not None:
            producer.stop()
        code = worker.stop()
    rows = one_all(dsn, QUIET_SQL)
    if len(rows) != sizes.quiet:
        raise BenchError(f"{len(rows)} of {sizes.quiet} quiet jobs have a running event")
    started = {}
    for line in stamps.read_text().splitlines():
        i, at = line.split()
        started.setdefault(int(i), float(at))
    pickup = [(float(run) - float(created)) * 1000 for _i, created, run, _fin in rows]
    body = [(started[i] - float(created)) * 1000 for i, created, _run, _fin in rows if i in started]
    in_worker = [
        (started[i] - float(run)) * 1000 for i, _created, run, _fin in rows if i in started
    ]
    # The measure (and peers.py's `latency`): body start - the client's clock before
    # the enqueue call; it adds the enqueue's own round trip and commit to the wait.
    client = [(started[i] - sent[i]) * 1000 for i in range(sizes.quiet) if i in started]
    flood_run, window = one(dsn, FLOOD_IN_WINDOW_SQL)
    m: Metrics = {
        "p50": statistics.median(pickup),
        "p99": percentile(pickup, 0.99),
        "max": max(pickup),
        "body_p50": statistics.median(body) if body else math.nan,
        "body_p99": percentile(body, 0.99) if body else math.nan,
        "in_worker_p99": percentile(in_worker, 0.99) if in_worker else math.nan,
        "client_p50": statistics.median(client) if client else math.nan,
        "client_p99": percentile(client, 0.99) if client else math.nan,
        "flood_run_rate": int(flood_run) / float(window) if window else 0.0,
        "backlog_end": int(backlog_end),
        "held_median": statistics.median(h for h, _ in samples) if samples else math.nan,
        "_client_ms": [  # raw results only: each quiet job's client-clock pickup, in order
            round((started[i] - sent[i]) * 1000, 3) if i in started else None
            for i in range(sizes.quiet)
        ],
    }
    if condition in ("backlog", "arriving"):
        m["autoanalyzed"] = int(analyzed)
    if condition == "arriving":
        commits = flood_out["committed"]
        m["flood_enqueue_s"] = commits[-1] - flood_out["started"]
        m["flood_enqueue_rate"] = flood_out["enqueued"] / m["flood_enqueue_s"]
        m["quiet_lead_s"] = sent[0] - commits[0]
        m["flood_batches_in_window"] = sum(1 for t in commits if sent[0] <= t <= sent[-1])
        m["_flood_commits_s"] = [t - sent[0] for t in commits]  # raw results only
    elif flood_out:
        m["flood_fed_rate"] = flood_out["enqueued"] / flood_out["seconds"]
        m["flood_target_rate"] = flood_rate
        m["flood_skipped"] = flood_out["skipped"]
        m["backlog_max"] = max((b for _, b in samples), default=-1)
    if len(body) != sizes.quiet:
        notes.append(f"{len(body)} of {sizes.quiet} quiet jobs stamped their body start")
    if code not in (0, None):
        notes.append(f"worker exit code {code} after SIGTERM")
    if notes:
        m["_note"] = "; ".join(notes)
    return m


def one_all(dsn: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return [tuple(r) for r in conn.execute(sql).fetchall()]  # type: ignore[arg-type]


# -- scenarios --------------------------------------------------------------------------------

Variant = tuple[str, Callable[[Ctx, str, dict[str, Any]], Metrics]]


def policy_variants(s: Sizes) -> list[Variant]:
    return [
        ("plain", lambda c, d, _st: drain(c, d, {"plain": s.drain}, ["plain"], policy_tasks.noop)),
        ("capped", lambda c, d, _st: drain(c, d, {"capped": s.drain}, [CAPPED], policy_tasks.noop)),
    ]


def many_variants(s: Sizes) -> list[Variant]:
    per = s.drain // s.queues
    spread = dict.fromkeys(MANY[: s.queues], per)
    return [
        ("one", lambda c, d, _st: drain(c, d, {MANY[0]: s.drain}, None, policy_tasks.noop)),
        ("many_all", lambda c, d, _st: drain(c, d, spread, None, policy_tasks.noop)),
        ("many_named", lambda c, d, _st: drain(c, d, spread, list(spread), policy_tasks.noop)),
    ]


def fairness_variants(s: Sizes) -> list[Variant]:
    def calibrate(c: Ctx, d: str, state: dict[str, Any]) -> Metrics:
        m = drain(
            c,
            d,
            {"flood": s.calibrate},
            c.fair_queues,
            policy_tasks.flood,
            concurrency=c.fair_concurrency,
        )
        state["capacity"] = m["rate"]
        return m

    def drained(c: Ctx, d: str, state: dict[str, Any]) -> Metrics:
        if "capacity" not in state:
            raise BenchError("no flood capacity measured in this rep")
        return fairness(c, d, "drained", state["capacity"] * s.flood_fraction)

    return [
        ("alone", lambda c, d, _st: fairness(c, d, "alone")),
        ("capacity", calibrate),
        ("drained", drained),
        ("backlog", lambda c, d, _st: fairness(c, d, "backlog")),
        ("arriving", lambda c, d, _st: fairness(c, d, "arriving")),
    ]


# --fairness-conditions: the letters of the docstring; (b) needs the capacity drain before it
CONDITIONS = {"a": ["alone"], "b": ["capacity", "drained"], "c": ["backlog"], "d": ["arriving"]}


SCENARIOS: dict[str, Callable[[Sizes], list[Variant]]] = {
    "policy-drain": policy_variants,
    "many-queues": many_variants,
    "fairness": fairness_variants,
}
ROTATE = {"policy-drain", "many-queues"}  # fairness keeps its order: (b) needs the capacity

Results = dict[str, dict[str, list[Metrics]]]  # scenario -> variant -> one Metrics per rep

# ---------------------------------------------------------------------------------------------
# report


def fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def med(runs: list[Metrics], key: str) -> float | None:
    values = [
        r[key] for r in runs if key in r and not (isinstance(r[key], float) and math.isnan(r[key]))
    ]
    return statistics.median(values) if values else None


# (label, scenario, variant, metric) for a plain row; (label, scenario, a, b, metric, target)
# for a ratio row: median of a over median of b, with the ratio of each rep's pair listed.
Ratio = tuple[str, str, str, str, str, str]
Row = tuple[str, str, str, str]


def rows(s: Sizes) -> list[Row | Ratio]:
    n, per, q = s.drain, s.drain // s.queues, s.queues
    cap = '`Queue("capped", concurrency=1000, rate=Rate(1_000_000, per=1.0))`'
    a, b, c = "(a) quiet alone", "(b) beside a drained flood", f"(c) beside a {s.backlog:,} backlog"
    d = f"(d) beside a {s.backlog:,} backlog arriving while the worker runs"
    nb = s.arriving_batches
    fr = f"{s.flood_fraction:.0%}"
    cl = "body start - client clock before enqueue"
    P, M, F = "policy-drain", "many-queues", "fairness"
    return [
        (f"drain {n:,} no-op, queue without a policy (jobs/s)", P, "plain", "rate"),
        (f"drain {n:,} no-op, {cap} (jobs/s)", P, "capped", "rate"),
        ("**policy / no policy**", P, "capped", "plain", "rate", ">=0.85"),
        ("same, timed go -> done (cross-check)", P, "capped", "plain", "wall_rate", ""),
        ("jobs per claim statement, no policy", P, "plain", "per_claim"),
        ("jobs per claim statement, capped", P, "capped", "per_claim"),
        (f"drain {n:,} no-op in 1 queue, `queues=None` (jobs/s)", M, "one", "rate"),
        (f"drain {q} x {per:,} in {q} queues, `queues=None` (jobs/s)", M, "many_all", "rate"),
        (f"drain {q} x {per:,} in {q} queues, named (jobs/s)", M, "many_named", "rate"),
        (f"**{q} queues (`None`) / 1 queue**", M, "many_all", "one", "rate", ">=0.85"),
        (f"**{q} queues (named) / 1 queue**", M, "many_named", "one", "rate", ">=0.85"),
        ("same (`None`), timed go -> done", M, "many_all", "one", "wall_rate", ""),
        ("same (named), timed go -> done", M, "many_named", "one", "wall_rate", ""),
        ("jobs per claim statement, 1 queue", M, "one", "per_claim"),
        (f"jobs per claim statement, {q} queues (`None`)", M, "many_all", "per_claim"),
        (f"jobs per claim statement, {q} queues (named)", M, "many_named", "per_claim"),
        (f"flood capacity: drain {s.calibrate:,} flood jobs (jobs/s)", F, "capacity", "rate"),
        (f"{a}: quiet pickup p50 (ms)", F, "alone", "p50"),
        (f"{a}: quiet pickup p99 (ms)", F, "alone", "p99"),
        (f"{b}: quiet pickup p50 (ms)", F, "drained", "p50"),
        (f"{b}: quiet pickup p99 (ms)", F, "drained", "p99"),
        (f"{c}: quiet pickup p50 (ms)", F, "backlog", "p50"),
        (f"{c}: quiet pickup p99 (ms)", F, "backlog", "p99"),
        (f"{d}: quiet pickup p50 (ms)", F, "arriving", "p50"),
        (f"{d}: quiet pickup p99 (ms)", F, "arriving", "p99"),
        ("**pickup p99 (c) / (b)**", F, "backlog", "drained", "p99", "<=2"),
        ("**pickup p99 (d) / (b)**", F, "arriving", "drained", "p99", "<=2"),
        ("pickup p50 (c) / (b)", F, "backlog", "drained", "p50", ""),
        ("pickup p50 (d) / (b)", F, "arriving", "drained", "p50", ""),
        (f"{a}: pickup p50 (ms), {cl}", F, "alone", "client_p50"),
        (f"{a}: pickup p99 (ms), {cl}", F, "alone", "client_p99"),
        (f"{b}: pickup p50 (ms), {cl}", F, "drained", "client_p50"),
        (f"{b}: pickup p99 (ms), {cl}", F, "drained", "client_p99"),
        (f"{c}: pickup p50 (ms), {cl}", F, "backlog", "client_p50"),
        (f"{c}: pickup p99 (ms), {cl}", F, "backlog", "client_p99"),
        (f"{d}: pickup p50 (ms), {cl}", F, "arriving", "client_p50"),
        (f"{d}: pickup p99 (ms), {cl}", F, "arriving", "client_p99"),
        (f"**pickup p99 (c) / (b), {cl}**", F, "backlog", "drained", "client_p99", "<=2"),
        (f"**pickup p99 (d) / (b), {cl}**", F, "arriving", "drained", "client_p99", "<=2"),
        (f"(d) flood enqueue, go to the last of {nb} commits (s)", F, "arriving",
         "flood_enqueue_s"),
        ("(d) flood enqueue rate over those seconds (jobs/s)", F, "arriving",
         "flood_enqueue_rate"),
        ("(d) first quiet enqueue after the first flood commit (s)", F, "arriving",
         "quiet_lead_s"),
        (f"(d) flood batches (of {nb}) committed while quiet jobs arrived", F, "arriving",
         "flood_batches_in_window"),
        (f"(b) flood producer's target, {fr} of the rep's capacity (jobs/s)", F,
         "drained", "flood_target_rate"),
        ("(b) flood fed by the producer (jobs/s)", F, "drained", "flood_fed_rate"),
        ("(b) flood jobs the producer skipped (backlog above two batches)", F, "drained",
         "flood_skipped"),
        ("(b) flood jobs started while quiet jobs arrived (jobs/s)", F, "drained",
         "flood_run_rate"),
        ("(c) flood jobs started while quiet jobs arrived (jobs/s)", F, "backlog",
         "flood_run_rate"),
        ("(d) flood jobs started while quiet jobs arrived (jobs/s)", F, "arriving",
         "flood_run_rate"),
        ("(b) flood backlog, largest sampled every 0.25 s", F, "drained", "backlog_max"),
        ("(a) jobs the worker held (claimed, unfinished), median sample", F, "alone",
         "held_median"),
        ("(b) jobs the worker held, median sample", F, "drained", "held_median"),
        ("(c) jobs the worker held, median sample", F, "backlog", "held_median"),
        ("(d) jobs the worker held, median sample", F, "arriving", "held_median"),
        ("(b) flood backlog when the last quiet job finished", F, "drained", "backlog_end"),
        ("(c) flood backlog when the last quiet job finished", F, "backlog", "backlog_end"),
        ("(d) flood backlog when the last quiet job finished", F, "arriving", "backlog_end"),
        ("(c) autovacuum ANALYZE runs on pgq.jobs by then", F, "backlog", "autoanalyzed"),
        ("(d) autovacuum ANALYZE runs on pgq.jobs by then", F, "arriving", "autoanalyzed"),
        ("(a) quiet body start - created_at, p50 / p99 (ms)", F, "alone", "body"),
        ("(b) quiet body start - created_at, p50 / p99 (ms)", F, "drained", "body"),
        ("(c) quiet body start - created_at, p50 / p99 (ms)", F, "backlog", "body"),
        ("(d) quiet body start - created_at, p50 / p99 (ms)", F, "arriving", "body"),
        ("(a) quiet body start - running event, p99 (ms)", F, "alone", "in_worker_p99"),
        ("(b) quiet body start - running event, p99 (ms)", F, "drained", "in_worker_p99"),
        ("(c) quiet body start - running event, p99 (ms)", F, "backlog", "in_worker_p99"),
        ("(d) quiet body start - running event, p99 (ms)", F, "arriving", "in_worker_p99"),
    ]  # fmt: skip


def report(results: Results, sizes: Sizes, errors: list[str]) -> list[str]:
    lines = ["| | median | every run (rep order) | target |", "|---|---|---|---|"]
    for spec in rows(sizes):
        label, scenario = spec[0], spec[1]
        by = results.get(scenario, {})
        if len(spec) == 4:
            _, _, variant, key = spec
            runs = by.get(variant, [])
            if not runs:
                continue
            keys = ["body_p50", "body_p99"] if key == "body" else [key]
            median = " / ".join(fmt(med(runs, k)) for k in keys)
            every = ", ".join(" / ".join(fmt(r.get(k)) for k in keys) if r else "ERR" for r in runs)
            lines.append(f"| {label} | {median} | {every} | |")
            continue
        _, _, a, b, key, target = spec
        ra, rb = by.get(a, []), by.get(b, [])
        ma, mb = med(ra, key), med(rb, key)
        if ma is None or not mb:
            continue
        ratio = ma / mb
        paired = ", ".join(
            f"{x[key] / y[key]:.2f}x" if x.get(key) and y.get(key) else "ERR"
            for x, y in zip(ra, rb, strict=False)
        )
        verdict = ""
        if target:
            bound = float(target[2:])
            met = ratio >= bound if target.startswith(">=") else ratio <= bound
            verdict = f"{target[:2]} {bound:g}x: " + ("met" if met else "**not met**")
        lines.append(f"| {label} | **{ratio:.2f}x** | {paired} | {verdict} |")
    lines.append("")
    lines.append(
        "Medians over the reps; ratio rows are median over median, each rep's own pair listed."
    )
    notes = sorted(
        {
            f"{scenario} {variant}: {r['_note']}"
            for scenario, by in results.items()
            for variant, runs in by.items()
            for r in runs
            if "_note" in r
        }
    )
    if notes or errors:
        lines.append("")
        lines.append("Notes and errors:")
        lines.extend(f"- {x}" for x in notes)
        lines.extend(f"- {e}" for e in errors)
    return lines


def pgq_revision() -> str:
    """The commit pgq runs from, and whether src/ differs from it."""
    return source_revision(REPO)


def fair_shape(args: argparse.Namespace) -> str:
    queues = "`queues=None`" if args.fairness_queues == "all" else f"`queues={FAIR_QUEUES}`"
    return f"{queues}, concurrency {args.fairness_concurrency}"


def header(server: Server, args: argparse.Namespace, sizes: Sizes) -> list[str]:
    cpu, mem = machine()
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return [
        f"# Queue policies (issue #4) — {now}",
        "",
        f"- machine: {platform.node()}, {os.cpu_count()} CPUs ({cpu}), {mem} RAM,"
        f" {platform.system()} {platform.release()}",
        f"- PostgreSQL: {server.describe()}",
        *[f"  - {note}" for note in server.notes],
        f"- pgq {pgq.__version__} ({pgq_revision()}), psycopg {psycopg.__version__},"
        f" Python {platform.python_version()}",
        f"- load average at start: {loadavg()} (a busy machine skews every number)",
        f"- reps: {args.reps}, interleaved, a fresh database per run; one worker process;"
        f" drains: concurrency {CONCURRENCY}; fairness (all its conditions and the capacity"
        f" drain): {fair_shape(args)}; {sizes.quiet} quiet jobs"
        f" {sizes.interval * 1000:.0f} ms apart",
        "",
    ]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dsn", default=os.environ.get("PGQ_BENCH_DSN"), help="server DSN")
    p.add_argument("--reps", type=int, default=None, help="repetitions (default 3; 1 with --quick)")
    p.add_argument(
        "--scenarios", default=",".join(SCENARIOS), help="comma-separated: " + ", ".join(SCENARIOS)
    )
    p.add_argument("--quick", action="store_true", help="small counts, for a smoke test")
    p.add_argument("--json-out", type=Path, help="also write raw results here")
    p.add_argument(
        "--fairness-conditions",
        default=",".join(CONDITIONS),
        help="fairness conditions to run, of a,b,c,d (default all; b includes its capacity drain)",
    )
    p.add_argument(
        "--fairness-queues",
        choices=("all", "named"),
        default="all",
        help='fairness worker: all = queues=None (default); named = ["flood", "quiet"]',
    )
    p.add_argument(
        "--fairness-concurrency",
        type=int,
        default=8,
        help="fairness worker's concurrency (default 8)",
    )
    args = p.parse_args(argv)
    args.reps = args.reps or (1 if args.quick else 3)
    if args.fairness_concurrency < 1:
        p.error("--fairness-concurrency must be >= 1")
    args.fairness_conditions = [c.strip() for c in args.fairness_conditions.split(",") if c.strip()]
    if not args.fairness_conditions or set(args.fairness_conditions) - set(CONDITIONS):
        p.error(f"--fairness-conditions takes some of {','.join(CONDITIONS)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)

    def on_term(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)  # unwind: children stopped, databases dropped

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    sizes = QUICK if args.quick else Sizes()
    scenarios = [k.strip() for k in args.scenarios.split(",") if k.strip()]
    for k in scenarios:
        if k not in SCENARIOS:
            raise SystemExit(f"unknown scenario {k!r}; choose from {', '.join(SCENARIOS)}")
    server = find_server(args.dsn)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    runs_dir = BENCH / ".runs" / f"policies-{stamp}"
    runs_dir.mkdir(parents=True, exist_ok=True)
    ctx = Ctx(
        server,
        sizes,
        runs_dir,
        fair_queues=None if args.fairness_queues == "all" else list(FAIR_QUEUES),
        fair_concurrency=args.fairness_concurrency,
    )
    rev_at_start = pgq_revision()
    head = header(server, args, sizes)
    print("\n".join(head), file=sys.stderr, flush=True)
    results: Results = {}
    errors: list[str] = []
    started = time.monotonic()
    for rep in range(args.reps):
        for key in scenarios:
            variants = SCENARIOS[key](sizes)
            if key == "fairness":
                wanted = {v for c in args.fairness_conditions for v in CONDITIONS[c]}
                variants = [v for v in variants if v[0] in wanted]
            if key in ROTATE:
                k = rep % len(variants)
                variants = variants[k:] + variants[:k]
            state: dict[str, Any] = {}
            for name, run in variants:
                runs = results.setdefault(key, {}).setdefault(name, [])
                db = f"pgqbench_pol_r{rep + 1}_{key.replace('-', '_')}_{name}"
                t = time.monotonic()
                try:
                    with server.fresh_database(db) as dsn:
                        metrics = run(ctx, dsn, state)
                except (BenchError, psycopg.Error, OSError, subprocess.SubprocessError) as exc:
                    metrics = {}
                    errors.append(f"rep {rep + 1} {key} {name}: {exc}")
                runs.append(metrics)
                shown = ", ".join(
                    f"{k}={fmt(v)}" for k, v in metrics.items() if not k.startswith("_")
                )
                print(
                    f"[rep {rep + 1}/{args.reps} {time.monotonic() - started:5.0f}s]"
                    f" {key:<12} {name:<10}"
                    f" {shown or 'ERROR'} ({time.monotonic() - t:.1f}s)"
                    + (f" — {metrics['_note']}" if "_note" in metrics else ""),
                    file=sys.stderr,
                    flush=True,
                )
    total = time.monotonic() - started
    if (rev := pgq_revision()) != rev_at_start:
        errors.append(
            f"pgq changed during the run: {rev_at_start} at the start, {rev} at the end;"
            " workers import pgq afresh per run, so reps may mix versions"
        )
    lines = [*head, *report(results, sizes, errors), ""]
    lines.append(
        f"Total time: {total:.0f} s; load average at the end: {loadavg()}; logs in {runs_dir}"
    )
    print("\n".join(lines))
    raw = {
        "header": head,
        "sizes": sizes.__dict__,
        "fairness_worker": {"queues": ctx.fair_queues, "concurrency": ctx.fair_concurrency},
        "results": results,
        "errors": errors,
        "total_seconds": total,
    }
    (runs_dir / "results.json").write_text(json.dumps(raw, indent=1))
    (runs_dir / "report.md").write_text("\n".join(lines) + "\n")
    if args.json_out:
        args.json_out.write_text(json.dumps(raw, indent=1))
    return 0


CHILD_ROLES = ("_worker", "_flood", "_burst")


def child_main(argv: list[str]) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("role", choices=CHILD_ROLES)
    p.add_argument("--dsn", required=True)
    p.add_argument("--spec", default="{}")
    p.add_argument("--mode", choices=("drain", "serve"), default="drain")
    p.add_argument("--rate", type=float, default=0.0)
    p.add_argument("--tick", type=float, default=0.01)
    p.add_argument("--total", type=int, default=0)
    p.add_argument("--batches", type=int, default=1)
    ns = p.parse_args(argv)
    if ns.role == "_worker":
        child_worker(ns.dsn, json.loads(ns.spec), ns.mode)
    elif ns.role == "_flood":
        child_flood(ns.dsn, ns.rate, ns.tick)
    else:
        child_burst(ns.dsn, ns.total, ns.batches)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in CHILD_ROLES:
        child_main(sys.argv[1:])
    else:
        raise SystemExit(main())
