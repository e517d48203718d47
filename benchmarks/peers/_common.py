"""Shared plumbing for the benchmark drivers in this folder.

Every driver is a small script, run by ``benchmarks/peers.py`` as a subprocess with the
Python of the environment that holds its library. A driver does the work; the orchestrator
times worker runs from the outside and confirms every count in the database itself.

Protocol (stdout, one JSON object per line):

- ``setup``: install the system's schema in the (fresh) database.
- ``enqueue-one``: ``--n`` jobs, each in its own transaction, one connection;
  prints ``{"jobs": n, "seconds": t}``.
- ``enqueue-bulk``: ``--n`` jobs in one bulk call; prints ``{"jobs": n, "seconds": t}``.
  ``prefill`` is the same, used (untimed) to build a backlog.
- ``enqueue-bulk-typed``: ``--n`` jobs of a task taking ``(i: int = -1, t: float = 0.0)``,
  args ``{}``, in one bulk call; each job's args (and whatever the library needs per job: a
  ``pgq.JobSpec``, a payload) are built inside the timed region, as an application does.
  Prints ``{"jobs": n, "seconds": t}``. ``enqueue-bulk-typed-args``: the same with the args
  ``{"i": k, "t": k / 2}`` for the k-th job.
- ``drain-worker``: connects, prints ``{"ready": true}``, waits for a line on stdin, drains the
  queue until nothing is left (burst mode), prints ``{"done": true}`` and exits.
- ``serve-worker``: prints ``{"ready": true}`` and serves until SIGTERM. The ``stamp`` task
  appends ``"<i> <time.time()>"`` to the file named by ``$BENCH_STAMP_FILE``.
- ``latency-enqueue``: ``--n`` ``stamp`` jobs ``--interval`` seconds apart, one per
  transaction; prints ``{"t0": [...]}`` (``time.time()`` taken just before each enqueue call).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

COMMANDS = (
    "setup",
    "enqueue-one",
    "enqueue-bulk",
    "enqueue-bulk-typed",
    "enqueue-bulk-typed-args",
    "prefill",
    "drain-worker",
    "serve-worker",
    "latency-enqueue",
)


@dataclass(frozen=True)
class Args:
    command: str
    dsn: str
    n: int
    interval: float
    concurrency: int


def parse_args(argv: list[str] | None = None) -> Args:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=COMMANDS)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--n", type=int, default=0)
    parser.add_argument("--interval", type=float, default=0.02)
    parser.add_argument("--concurrency", type=int, default=10)
    ns = parser.parse_args(argv)
    return Args(ns.command, ns.dsn, ns.n, ns.interval, ns.concurrency)


def emit(**fields: Any) -> None:
    """Print one JSON line for the orchestrator and flush it at once."""
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def wait_for_go() -> None:
    """Tell the orchestrator this worker is ready, then block until it says go."""
    emit(ready=True)
    line = sys.stdin.readline()
    if not line:
        raise SystemExit("orchestrator went away before 'go'")


class Stamper:
    """Records when a ``stamp`` job's body starts: one ``write(2)`` of a short line.

    The file is opened once (O_APPEND) so that the measured path is a single system call,
    the same for every system.
    """

    def __init__(self) -> None:
        path = os.environ.get("BENCH_STAMP_FILE")
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if path else -1

    def __call__(self, i: int) -> None:
        now = time.time()
        if self._fd >= 0:
            os.write(self._fd, f"{i} {now!r}\n".encode())


def paced(n: int, interval: float) -> list[tuple[int, float]]:
    """Deadlines for ``n`` enqueues ``interval`` seconds apart, from now (perf_counter)."""
    start = time.perf_counter()
    return [(i, start + i * interval) for i in range(n)]


def sleep_until(deadline: float) -> None:
    delay = deadline - time.perf_counter()
    if delay > 0:
        time.sleep(delay)
