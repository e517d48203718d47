"""pgq beside its peers: PGQueuer, Procrastinate and plain psycopg SQL, in one run.

    python3 benchmarks/peers.py [--dsn DSN] [--reps 3] [--only pgq,pgqueuer] [--quick]
                                [--scenarios enqueue-one,drain-1p,...]
                                [--pgq-base-python OTHER_CHECKOUT/.venv/bin/python]

Each scenario run gets a fresh database (CREATE DATABASE, dropped after). Repetitions are
interleaved: rep 1 runs every scenario for every system, then rep 2, ... (the system order
rotates per rep). Every count is confirmed in the database, never taken from a worker.
The report (Markdown, on stdout) gives medians; progress goes to stderr; raw results and
each driver's stderr are kept under ``benchmarks/.runs/<timestamp>/``.

The peers run from their own virtualenv (``benchmarks/.peers-venv``, created on first use from
``benchmarks/peers/requirements.txt``); pgq runs from pgq's environment (``.venv`` at the
repository root, or ``--pgq-python``). ``--pgq-base-python`` adds a second pgq build, the
system "pgq-base": the same driver and tasks run with that interpreter (another checkout's
environment), interleaved with the others, for an A/B of two builds in one sitting. See
benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PEERS_DIR = BENCH / "peers"
PEERS_VENV = BENCH / ".peers-venv"
PEERS_PYTHON = PEERS_VENV / "bin" / "python"
PEERS_IMPORTS = "import pgqueuer, procrastinate, asyncpg, uvloop, psycopg"


def ensure_peers_venv() -> None:
    """Create the peers' virtualenv if it is missing or incomplete (never pgq's env)."""
    if PEERS_PYTHON.exists():
        probe = subprocess.run(
            [PEERS_PYTHON, "-c", PEERS_IMPORTS], capture_output=True, check=False
        )
        if probe.returncode == 0:
            return
    base = os.environ.get("PGQ_BENCH_BASE_PYTHON") or sys.executable
    if Path(sys.prefix).resolve() == PEERS_VENV.resolve():
        base = sys._base_executable  # type: ignore[attr-defined]
    print(f"creating {PEERS_VENV} with {base} ...", file=sys.stderr, flush=True)
    subprocess.run([base, "-m", "venv", PEERS_VENV], check=True)
    pip = [PEERS_PYTHON, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "-r", PEERS_DIR / "requirements.txt"], check=True)


try:
    import psycopg
except ImportError:  # bootstrap: re-run this script with the peers' Python, which has psycopg
    ensure_peers_venv()
    os.execv(PEERS_PYTHON, [str(PEERS_PYTHON), __file__, *sys.argv[1:]])

from _harness import (  # noqa: E402
    BenchError,
    Child,
    checkpoint,
    loadavg,
    machine,
    percentile,
    source_revision,
    tail,
)
from bench_server import Server, find_server  # noqa: E402

# ---------------------------------------------------------------------------------------------
# systems


@dataclass(frozen=True)
class System:
    key: str
    label: str
    driver: str
    python: str
    completed_sql: str  # jobs the database holds in the terminal success state
    enqueued_sql: str  # jobs the database holds (right after an enqueue, all are queued)
    env: dict[str, str] = field(default_factory=dict)


def pgq_system(key: str, label: str, python: str) -> System:
    """pgq's driver run by ``python``; the repository root on PYTHONPATH for the tasks module
    (``benchmarks.pgq_tasks``), so every pgq build runs this checkout's benchmark code."""
    return System(
        key,
        label,
        "pgq_driver.py",
        python,
        "select count(*) from pgq.jobs where state = 'completed'",
        "select count(*) from pgq.jobs",
        {"PYTHONPATH": str(REPO)},
    )


def make_systems(pgq_python: str, pgq_base_python: str | None) -> dict[str, System]:
    peers = str(PEERS_PYTHON)
    return {
        "plain": System(
            "plain",
            "plain SQL",
            "plainsql_driver.py",
            peers,
            "select count(*) from plain_jobs where state = 'completed'",
            "select count(*) from plain_jobs",
        ),
        "plainfull": System(
            "plainfull",
            "plain SQL, full contract",
            "plainsql_driver.py",
            peers,
            "select count(*) from plain_jobs where state = 'completed'",
            "select count(*) from plain_jobs",
            {"PLAIN_CONTRACT": "full"},
        ),
        "pgq": pgq_system("pgq", "pgq", pgq_python),
        "pgq-base": pgq_system("pgq-base", "pgq (base)", pgq_base_python or ""),
        "pgqueuer": System(
            "pgqueuer",
            "PGQueuer",
            "pgqueuer_driver.py",
            peers,
            "select count(*) from pgqueuer_log where status = 'successful'",
            "select count(*) from pgqueuer",
        ),
        "procrastinate": System(
            "procrastinate",
            "Procrastinate",
            "procrastinate_driver.py",
            peers,
            "select count(*) from procrastinate_jobs where status = 'succeeded'",
            "select count(*) from procrastinate_jobs",
        ),
    }


SYSTEM_ORDER = ("plain", "plainfull", "pgq", "pgq-base", "pgqueuer", "procrastinate")
PGQ_SYSTEMS = ("pgq", "pgq-base")  # pgq-base: the build given by --pgq-base-python

# ---------------------------------------------------------------------------------------------
# sizes


@dataclass(frozen=True)
class Sizes:
    enqueue_one: int = 5_000
    bulk: int = 20_000
    drain: int = 20_000
    deep: int = 200_000
    latency: int = 200
    latency_interval: float = 0.02
    idle: float = 2.0
    rss_first: int = 10_000
    rss_total: int = 100_000


QUICK = Sizes(
    enqueue_one=300, bulk=2_000, drain=2_000, deep=20_000, latency=30, rss_first=1_000,
    rss_total=10_000,
)  # fmt: skip

CONCURRENCY = 10

# ---------------------------------------------------------------------------------------------
# running drivers


@dataclass
class Context:
    server: Server
    sizes: Sizes
    runs_dir: Path
    cap: float
    deep_cap: float
    seq: int = 0

    def log_path(self, what: str) -> Path:
        self.seq += 1
        return self.runs_dir / f"{self.seq:04d}-{what}.log"


def driver_cmd(system: System, command: str, dsn: str, *extra: str) -> list[str]:
    return [system.python, str(PEERS_DIR / system.driver), command, "--dsn", dsn, *extra]


def driver_env(system: System, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.update(system.env)
    env.update(extra or {})
    return env


def last_json(text: str) -> dict[str, Any]:
    for raw in reversed(text.strip().splitlines()):
        line = raw.strip()
        if line.startswith("{"):
            return dict(json.loads(line))
    raise BenchError(f"no JSON line in driver output: {text[-500:]!r}")


def run_driver(
    ctx: Context, system: System, command: str, dsn: str, *extra: str, timeout: float = 600.0
) -> dict[str, Any]:
    log = ctx.log_path(f"{system.key}-{command}")
    with log.open("w") as err:
        try:
            proc = subprocess.run(
                driver_cmd(system, command, dsn, *extra),
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                cwd=REPO,
                env=driver_env(system),
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise BenchError(f"{system.key} {command} timed out after {timeout:.0f} s") from exc
    if proc.returncode != 0:
        raise BenchError(
            f"{system.key} {command} exited {proc.returncode}; stderr ({log}):\n{tail(log)}"
        )
    return last_json(proc.stdout)


def db_count(dsn: str, query: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])


class Worker(Child):
    """A driver worker subprocess whose JSON stdout lines are read by a thread."""

    def __init__(
        self, ctx: Context, system: System, argv: list[str], env: dict[str, str] | None = None
    ) -> None:
        super().__init__(
            ctx.log_path(f"{system.key}-{argv[2]}"), argv, driver_env(system, env), REPO
        )

    def expect(self, key: str, timeout: float) -> float:
        """Wait for a JSON line carrying ``key``; returns when it was read (perf_counter)."""
        return self.wait_for(key, timeout)[1]


# ---------------------------------------------------------------------------------------------
# scenarios: each returns {metric: value}, plus "_note" / "_capped" entries


Metrics = dict[str, Any]


def sc_enqueue(ctx: Context, system: System, dsn: str, command: str, n: int) -> Metrics:
    run_driver(ctx, system, "setup", dsn)
    # The new database and each system's schema leave dirty pages and WAL of different sizes
    # (pgq's migrations write the most); flushed here, they are not written back under the
    # timed loop of one system and not another's.
    checkpoint(dsn)
    out = run_driver(ctx, system, command, dsn, "--n", str(n))
    confirmed = db_count(dsn, system.enqueued_sql)
    if confirmed != n:
        raise BenchError(f"driver enqueued {n}, database holds {confirmed}")
    return {"rate": n / float(out["seconds"])}


def drain(ctx: Context, system: System, dsn: str, *, n: int, processes: int, cap: float) -> Metrics:
    run_driver(ctx, system, "setup", dsn)
    run_driver(ctx, system, "prefill", dsn, "--n", str(n))
    queued = db_count(dsn, system.enqueued_sql)
    if queued != n:
        raise BenchError(f"prefill of {n} left {queued} jobs in the database")
    checkpoint(dsn)
    argv = driver_cmd(system, "drain-worker", dsn, "--concurrency", str(CONCURRENCY))
    workers = [Worker(ctx, system, argv) for _ in range(processes)]
    capped = False
    try:
        for w in workers:
            w.expect("ready", timeout=120)
        start = time.perf_counter()
        for w in workers:
            w.go()
        end = start
        for w in workers:
            try:
                end = max(
                    end, w.expect("done", timeout=max(0.0, start + cap - time.perf_counter()))
                )
            except TimeoutError:
                capped = True
        if capped:
            for w in workers:
                w.stop()
            end = time.perf_counter()
    finally:
        for w in workers:
            w.stop()
    done = db_count(dsn, system.completed_sql)
    if not capped and done != n:
        raise BenchError(f"workers finished, but the database confirms {done} of {n} completed")
    metrics: Metrics = {"rate": done / (end - start)}
    if capped:
        metrics["_capped"] = f"stopped at the {cap:.0f} s cap with {done:,} of {n:,} jobs done"
    return metrics


WARMUP = 10  # jobs left out of "p99_warm": the first few after the idle period are the slowest


def sc_latency(ctx: Context, system: System, dsn: str) -> Metrics:
    sizes = ctx.sizes
    run_driver(ctx, system, "setup", dsn)
    stamps = ctx.runs_dir / f"stamps-{ctx.seq:04d}-{system.key}.txt"
    stamps.write_text("")
    argv = driver_cmd(system, "serve-worker", dsn, "--concurrency", str(CONCURRENCY))
    worker = Worker(ctx, system, argv, {"BENCH_STAMP_FILE": str(stamps)})
    try:
        worker.expect("ready", timeout=120)
        time.sleep(sizes.idle)
        if worker.proc.poll() is not None:
            raise BenchError(f"worker exited early; stderr ({worker.log}):\n{tail(worker.log)}")
        out = run_driver(
            ctx, system, "latency-enqueue", dsn,
            "--n", str(sizes.latency), "--interval", str(sizes.latency_interval),
        )  # fmt: skip
        t0: list[float] = out["t0"]
        deadline = time.monotonic() + 30
        started: dict[int, float] = {}
        while time.monotonic() < deadline:
            started = {}
            for line in stamps.read_text().splitlines():
                i, at = line.split()
                started.setdefault(int(i), float(at))
            if len(started) >= len(t0):
                break
            time.sleep(0.1)
    finally:
        code = worker.stop()
    if len(started) < len(t0):
        raise BenchError(f"only {len(started)} of {len(t0)} stamp jobs started within 30 s")
    done = db_count(dsn, system.completed_sql)
    in_order = [round((started[i] - t0[i]) * 1000, 3) for i in range(len(t0))]
    lat = sorted(in_order)
    metrics: Metrics = {
        "p50": statistics.median(lat),
        "p99": percentile(lat, 0.99),
        "first": in_order[0],
        "p99_warm": percentile(in_order[WARMUP:], 0.99),
        "_samples_ms": in_order,
    }
    notes = []
    if done != len(t0):
        notes.append(f"database confirms {done} of {len(t0)} completed after SIGTERM")
    if code != 0:
        notes.append(f"worker exit code {code} after SIGTERM")
    if notes:
        metrics["_note"] = "; ".join(notes)
    return metrics


def vm_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise BenchError(f"no VmRSS for pid {pid}")


def sc_rss(ctx: Context, system: System, dsn: str) -> Metrics:
    """pgq's CLI worker: RSS idle, after the first batch of jobs, and after all of them."""
    sizes = ctx.sizes
    run_driver(ctx, system, "setup", dsn)
    log = ctx.log_path(f"{system.key}-cli-worker")
    argv = [
        system.python, "-m", "pgq", "worker", "benchmarks.pgq_tasks",
        "--dsn", dsn, "--concurrency", str(CONCURRENCY),
    ]  # fmt: skip
    with log.open("w") as err:
        proc = subprocess.Popen(
            argv, stdout=err, stderr=subprocess.STDOUT, cwd=REPO, env=driver_env(system)
        )

        def wait_completed(target: int, timeout: float) -> None:
            deadline = time.monotonic() + timeout
            while db_count(dsn, system.completed_sql) < target:
                if proc.poll() is not None:
                    raise BenchError(
                        f"`{' '.join(argv[1:])}` exited {proc.returncode}:\n{tail(log)}"
                    )
                if time.monotonic() > deadline:
                    raise BenchError(f"fewer than {target:,} jobs completed within {timeout} s")
                time.sleep(0.2)
            time.sleep(0.5)

        try:
            time.sleep(sizes.idle + 1.0)
            wait_completed(0, 10)
            idle = vm_rss_mib(proc.pid)
            run_driver(ctx, system, "prefill", dsn, "--n", str(sizes.rss_first))
            wait_completed(sizes.rss_first, 300)
            first = vm_rss_mib(proc.pid)
            rest = sizes.rss_total - sizes.rss_first
            run_driver(ctx, system, "prefill", dsn, "--n", str(rest))
            wait_completed(sizes.rss_total, 600)
            total = vm_rss_mib(proc.pid)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    metrics: Metrics = {"idle": idle, "first": first, "total": total, "growth": total - first}
    if proc.returncode != 0:
        metrics["_note"] = f"CLI worker exit code {proc.returncode} after SIGTERM"
    return metrics


@dataclass(frozen=True)
class Scenario:
    key: str
    run: Callable[[Context, System, str], Metrics]
    systems: tuple[str, ...] = SYSTEM_ORDER
    deep: bool = False


def sc_enqueue_one(ctx: Context, system: System, dsn: str) -> Metrics:
    return sc_enqueue(ctx, system, dsn, "enqueue-one", ctx.sizes.enqueue_one)


def sc_enqueue_bulk(ctx: Context, system: System, dsn: str) -> Metrics:
    return sc_enqueue(ctx, system, dsn, "enqueue-bulk", ctx.sizes.bulk)


def sc_enqueue_bulk_typed(ctx: Context, system: System, dsn: str) -> Metrics:
    return sc_enqueue(ctx, system, dsn, "enqueue-bulk-typed", ctx.sizes.bulk)


def sc_enqueue_bulk_typed_args(ctx: Context, system: System, dsn: str) -> Metrics:
    return sc_enqueue(ctx, system, dsn, "enqueue-bulk-typed-args", ctx.sizes.bulk)


# Procrastinate is left out of the typed bulk scenarios: it checks no args either, and its
# enqueue-bulk already builds one dict per job in the timed call.
TYPED_SYSTEMS = ("plain", "plainfull", "pgq", "pgq-base", "pgqueuer")


def sc_drain_1p(ctx: Context, system: System, dsn: str) -> Metrics:
    return drain(ctx, system, dsn, n=ctx.sizes.drain, processes=1, cap=ctx.cap)


def sc_drain_2p(ctx: Context, system: System, dsn: str) -> Metrics:
    return drain(ctx, system, dsn, n=ctx.sizes.drain, processes=2, cap=ctx.cap)


def sc_drain_deep(ctx: Context, system: System, dsn: str) -> Metrics:
    return drain(ctx, system, dsn, n=ctx.sizes.deep, processes=1, cap=ctx.deep_cap)


SCENARIOS: dict[str, Scenario] = {
    s.key: s
    for s in [
        Scenario("enqueue-one", sc_enqueue_one),
        Scenario("enqueue-bulk", sc_enqueue_bulk),
        Scenario("enqueue-bulk-typed", sc_enqueue_bulk_typed, systems=TYPED_SYSTEMS),
        Scenario("enqueue-bulk-typed-args", sc_enqueue_bulk_typed_args, systems=TYPED_SYSTEMS),
        Scenario("drain-1p", sc_drain_1p),
        Scenario("drain-2p", sc_drain_2p),
        Scenario("drain-deep", sc_drain_deep, deep=True),
        Scenario("latency", sc_latency),
        Scenario("rss", sc_rss, systems=PGQ_SYSTEMS),
    ]
}


def row_labels(sizes: Sizes) -> list[tuple[str, str, str, bool]]:
    """(scenario, metric, label, higher_is_better) for each row of the report."""
    b = f"{sizes.bulk:,} jobs"
    return [
        ("enqueue-one", "rate", f"enqueue 1 job per tx, {sizes.enqueue_one:,} jobs (jobs/s)", True),
        ("enqueue-bulk", "rate", f"bulk enqueue, {sizes.bulk:,} jobs (jobs/s)", True),
        ("enqueue-bulk-typed", "rate", f"bulk, typed task, args {{}}, {b} (jobs/s)", True),
        ("enqueue-bulk-typed-args", "rate", f"bulk, typed task, 2 args, {b} (jobs/s)", True),
        ("drain-1p", "rate", f"drain {sizes.drain:,}, 1 worker process (jobs/s)", True),
        ("drain-2p", "rate", f"drain {sizes.drain:,}, 2 worker processes (jobs/s)", True),
        ("drain-deep", "rate", f"drain {sizes.deep:,} backlog, 1 process (jobs/s)", True),
        ("latency", "p50", "idle pickup p50 (ms)", False),
        ("latency", "p99", "idle pickup p99 (ms)", False),
        ("latency", "first", "idle pickup, first job after the idle 2 s (ms)", False),
        ("latency", "p99_warm", f"idle pickup p99 without the first {WARMUP} jobs (ms)", False),
        ("rss", "idle", "worker RSS idle (MiB)", False),
        ("rss", "first", f"worker RSS after {sizes.rss_first:,} jobs (MiB)", False),
        ("rss", "total", f"worker RSS after {sizes.rss_total:,} jobs (MiB)", False),
        ("rss", "growth", f"RSS growth {sizes.rss_first:,} -> {sizes.rss_total:,} (MiB)", False),
    ]  # fmt: skip


# ---------------------------------------------------------------------------------------------
# report


def fmt(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


Results = dict[str, dict[str, list[Metrics]]]  # scenario -> system -> one Metrics per rep


def median_of(runs: list[Metrics], metric: str) -> float | None:
    values = [r[metric] for r in runs if metric in r]
    return statistics.median(values) if values else None


def report(
    results: Results, systems: Sequence[System], sizes: Sizes, errors: list[str]
) -> list[str]:
    present = list(systems)
    # pgq over each of these; pgq (base) only when that build ran
    others = ["pgqueuer", "plain", "plainfull"]
    if any(s.key == "pgq-base" for s in present):
        others.append("pgq-base")
    every = make_systems("", "")
    header = ["", *[s.label for s in present], *[f"pgq/{every[k].label}" for k in others]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    footnotes: list[str] = []
    for scenario, metric, label, _higher in row_labels(sizes):
        if scenario not in results:
            continue
        cells = [label]
        medians: dict[str, float | None] = {}
        for system in present:
            runs = results[scenario].get(system.key)
            if runs is None:
                cells.append("—")
                continue
            med = median_of(runs, metric)
            medians[system.key] = med
            cell = fmt(med) if med is not None else "ERR"
            capped = [r["_capped"] for r in runs if "_capped" in r]
            if capped and med is not None:
                footnotes.append(
                    f"{system.label}, {label}: {len(capped)} of {len(runs)} runs "
                    + "; ".join(capped)
                )
                cell += f" [{len(footnotes)}]"
            cells.append(cell)
        for other in others:
            a, b = medians.get("pgq"), medians.get(other)
            cells.append(f"{a / b:.2f}x" if a is not None and b else "—")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        "Medians of the runs listed below. Ratios are pgq's median over the peer's: above 1 is"
        " better for pgq in jobs/s rows, below 1 is better in ms and MiB rows."
    )
    for i, note in enumerate(footnotes, 1):
        lines.append(f"[{i}] {note} (rate = jobs the database confirms done / elapsed).")
    lines.append("")
    lines.append("Every run, in rep order:")
    lines.append("")
    lines.append("| | " + " | ".join(s.label for s in present) + " |")
    lines.append("|" + "---|" * (len(present) + 1))
    for scenario, metric, label, _higher in row_labels(sizes):
        if scenario not in results:
            continue
        cells = [label]
        for system in present:
            runs = results[scenario].get(system.key)
            cells.append(
                ", ".join(fmt(r[metric]) if metric in r else "ERR" for r in runs) if runs else "—"
            )
        lines.append("| " + " | ".join(cells) + " |")
    notes = sorted(
        {
            f"{system.label} {scenario}: {r['_note']}"
            for scenario, by_system in results.items()
            for system in present
            for r in by_system.get(system.key, [])
            if "_note" in r
        }
    )
    if notes or errors:
        lines.append("")
        lines.append("Notes and errors:")
        lines.extend(f"- {n}" for n in notes)
        lines.extend(f"- {e}" for e in errors)
    return lines


def machine_header(
    server: Server, systems: Sequence[System], args: argparse.Namespace, builds: dict[str, str]
) -> list[str]:
    cpu, mem = machine()
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"# pgq vs peers — {now}",
        "",
        f"- machine: {platform.node()}, {os.cpu_count()} CPUs ({cpu}), {mem} RAM,"
        f" {platform.system()} {platform.release()}",
        f"- PostgreSQL: {server.describe()}",
    ]
    lines.extend(f"  - {note}" for note in server.notes)
    for system in systems:
        build = f"; {builds[system.key]}" if system.key in builds else ""
        lines.append(f"- {system.label}: {versions(system)}{build}")
    lines.append(f"- load average at start: {loadavg()} (a busy machine skews every number)")
    lines.append(
        f"- reps: {args.reps} (deep drain: {args.deep_reps}), interleaved; worker concurrency"
        f" {CONCURRENCY}; drain cap {args.cap:.0f} s (deep: {args.deep_cap:.0f} s)"
    )
    lines.append("")
    return lines


def versions(system: System) -> str:
    dist = {
        "plain": "psycopg",
        "plainfull": "psycopg",
        "pgq": "pgq-jobs",
        "pgq-base": "pgq-jobs",
        "pgqueuer": "pgqueuer",
        "procrastinate": "procrastinate",
    }[system.key]
    extra = {"pgqueuer": ["asyncpg", "uvloop"], "procrastinate": ["psycopg"]}.get(system.key, [])
    code = (
        "import importlib.metadata as m, sys\n"
        "def v(d):\n"
        "    try: return m.version(d)\n"
        "    except m.PackageNotFoundError: return '?'\n"
        f"print(' '.join(f'{{d}} {{v(d)}}' for d in {[dist, *extra]!r}),"
        " 'on Python', sys.version.split()[0])"
    )
    out = subprocess.run([system.python, "-c", code], capture_output=True, text=True, check=False)
    return out.stdout.strip() or out.stderr.strip().splitlines()[-1]


# ---------------------------------------------------------------------------------------------
# main


PYTHON_OPTION = {"pgq": "--pgq-python", "pgq-base": "--pgq-base-python"}


def pgq_origin(system: System) -> Path:
    """The folder ``system``'s interpreter imports pgq from, with the driver's environment;
    BenchError (why) when it cannot run the pgq driver."""
    if not Path(system.python).is_file():
        raise BenchError(f"no Python at {system.python!r}; pass {PYTHON_OPTION[system.key]}")
    probe = subprocess.run(
        [
            system.python,
            "-c",
            "import pgq, psycopg; pgq.Worker; pgq.enqueue_many; pgq.JobSpec; pgq.migrate;"
            " print(pgq.__file__)",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=driver_env(system),
        check=False,
    )
    if probe.returncode != 0:
        raise BenchError((probe.stderr.strip().splitlines() or ["import failed"])[-1])
    return Path(probe.stdout.strip().splitlines()[-1]).parent


def pgq_builds(origins: dict[str, Path]) -> dict[str, str]:
    """Where each pgq system's pgq comes from, and that checkout's commit."""
    return {key: f"pgq from {path}, {source_revision(path)}" for key, path in origins.items()}


def render(path: Path) -> int:
    raw = json.loads(path.read_text())
    every = make_systems(sys.executable, sys.executable)
    systems = [every[k] for k in raw["systems"]]
    lines = [*raw["header"], *report(raw["results"], systems, Sizes(**raw["sizes"]), raw["errors"])]
    print("\n".join(lines))
    return 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dsn", default=os.environ.get("PGQ_BENCH_DSN"), help="server DSN")
    p.add_argument("--reps", type=int, default=None, help="repetitions (default 3; 1 with --quick)")
    p.add_argument(
        "--deep-reps", type=int, default=None, help="reps of drain-deep (default --reps)"
    )
    p.add_argument(
        "--only",
        default=None,
        help="systems, comma-separated (default: all; pgq-base only with --pgq-base-python)",
    )
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help="scenarios, comma-separated")
    p.add_argument("--quick", action="store_true", help="small counts, for a smoke test")
    p.add_argument("--cap", type=float, default=60.0, help="max seconds per 20k drain")
    p.add_argument("--deep-cap", type=float, default=30.0, help="max seconds per deep drain")
    default_pgq = REPO / ".venv" / "bin" / "python"
    p.add_argument("--pgq-python", default=os.environ.get("PGQ_BENCH_PGQ_PYTHON", str(default_pgq)))
    p.add_argument(
        "--pgq-base-python",
        default=os.environ.get("PGQ_BENCH_PGQ_BASE_PYTHON"),
        help="another pgq build's interpreter: adds the system pgq-base, reported as pgq (base)",
    )
    p.add_argument("--json-out", type=Path, help="also write raw results here")
    p.add_argument(
        "--render", type=Path, help="print the report of a saved results.json; run nothing"
    )
    args = p.parse_args(argv)
    args.reps = args.reps or (1 if args.quick else 3)
    args.deep_reps = args.reps if args.deep_reps is None else args.deep_reps
    if args.only is None:
        args.only = ",".join(k for k in SYSTEM_ORDER if k != "pgq-base" or args.pgq_base_python)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        return render(args.render)

    def on_term(signum: int, _frame: object) -> None:
        # Unwind through the finally blocks: workers stopped, scenario databases dropped.
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    ensure_peers_venv()
    sizes = QUICK if args.quick else Sizes()
    all_systems = make_systems(args.pgq_python, args.pgq_base_python)
    wanted = [k.strip() for k in args.only.split(",") if k.strip()]
    scenarios = [k.strip() for k in args.scenarios.split(",") if k.strip()]
    for k in wanted:
        if k not in all_systems:
            raise SystemExit(f"unknown system {k!r}; choose from {', '.join(SYSTEM_ORDER)}")
    for k in scenarios:
        if k not in SCENARIOS:
            raise SystemExit(f"unknown scenario {k!r}; choose from {', '.join(SCENARIOS)}")
    if "pgq-base" in wanted and not args.pgq_base_python:
        raise SystemExit("system pgq-base needs --pgq-base-python (another build's interpreter)")
    errors: list[str] = []
    origins: dict[str, Path] = {}
    for key in PGQ_SYSTEMS:
        if key in wanted:
            try:
                origins[key] = pgq_origin(all_systems[key])
            except BenchError as exc:
                errors.append(f"{all_systems[key].label} skipped: {exc}")
                wanted.remove(key)
    if len(set(origins.values())) < len(origins):
        raise SystemExit(f"pgq and pgq (base) both import pgq from {origins['pgq']}")
    builds = pgq_builds(origins)
    systems = [all_systems[k] for k in SYSTEM_ORDER if k in wanted]

    server = find_server(args.dsn)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    runs_dir = BENCH / ".runs" / stamp
    runs_dir.mkdir(parents=True, exist_ok=True)
    ctx = Context(server, sizes, runs_dir, args.cap, args.deep_cap)
    header = machine_header(server, systems, args, builds)
    print("\n".join(header), file=sys.stderr, flush=True)

    results: Results = {}
    started = time.monotonic()
    for rep in range(args.reps):
        order = systems[rep % len(systems) :] + systems[: rep % len(systems)] if systems else []
        for key in scenarios:
            scenario = SCENARIOS[key]
            if scenario.deep and rep >= args.deep_reps:
                continue
            for system in order:
                if system.key not in scenario.systems:
                    continue
                runs = results.setdefault(key, {}).setdefault(system.key, [])
                name = f"pgqbench_r{rep + 1}_{key.replace('-', '_')}_{system.key}"
                t = time.monotonic()
                try:
                    with server.fresh_database(name) as dsn:
                        metrics = scenario.run(ctx, system, dsn)
                except (BenchError, psycopg.Error, OSError, subprocess.SubprocessError) as exc:
                    metrics = {}
                    errors.append(f"rep {rep + 1} {key} {system.label}: {exc}")
                runs.append(metrics)
                shown = ", ".join(
                    f"{k}={fmt(v)}" for k, v in metrics.items() if not k.startswith("_")
                )
                extra = metrics.get("_capped") or metrics.get("_note") or ""
                print(
                    f"[rep {rep + 1}/{args.reps} {time.monotonic() - started:6.0f}s] {key:<12}"
                    f" {system.label:<14} {shown or 'ERROR'} ({time.monotonic() - t:.1f}s)"
                    + (f" — {extra}" if extra else ""),
                    file=sys.stderr,
                    flush=True,
                )
    if (now := pgq_builds(origins)) != builds:
        errors.extend(
            f"{all_systems[k].label} changed during the run: {builds[k]} at the start,"
            f" {now[k]} at the end; drivers import pgq afresh per run, so reps may mix versions"
            for k in builds
            if now[k] != builds[k]
        )
    lines = [*header, *report(results, systems, sizes, errors)]
    lines.append("")
    lines.append(
        f"Total time: {time.monotonic() - started:.0f} s; load average at the end: {loadavg()};"
        f" driver logs in {runs_dir}"
    )
    print("\n".join(lines))
    raw = {
        "header": header,
        "sizes": sizes.__dict__,
        "systems": [s.key for s in systems],
        "results": results,
        "errors": errors,
        "total_seconds": time.monotonic() - started,
    }
    (runs_dir / "results.json").write_text(json.dumps(raw, indent=1))
    (runs_dir / "report.md").write_text("\n".join(lines) + "\n")
    if args.json_out:
        args.json_out.write_text(json.dumps(raw, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
