"""Pieces both benchmark orchestrators use (peers.py and policies.py): child processes that
report JSON lines, and small helpers. Importable from either script (its folder is on
sys.path when it runs)."""

from __future__ import annotations

import hashlib
import json
import math
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import psycopg


class BenchError(Exception):
    pass


class ChildTimeout(BenchError, TimeoutError):
    """A child did not report what was expected in time."""


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


def checkpoint(dsn: str) -> None:
    """Flush the backlog's pages before the timed part, the same for every run."""
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("checkpoint")
    except psycopg.Error:
        pass


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (p99 of 200 samples is the 198th smallest)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def source_revision(where: Path) -> str:
    """The commit of the git checkout holding ``where``, and whether its src/ differs from it
    (read-only git calls)."""
    git = ["git", "--no-optional-locks", "-C", str(where)]
    head = subprocess.run(
        [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    )
    if head.returncode != 0:
        return "not a git checkout"
    diff = subprocess.run(
        [*git, "diff", "HEAD", "--", ":/src"], capture_output=True, text=True, check=False
    ).stdout
    changed = sum(1 for line in diff.splitlines() if line.startswith("diff --git"))
    digest = hashlib.sha1(diff.encode()).hexdigest()[:8]
    dirty = (
        f", plus uncommitted changes to {changed} file(s) in src/ (diff {digest})" if diff else ""
    )
    return f"commit {head.stdout.strip()}{dirty}"


def machine() -> tuple[str, str]:
    """The CPU model and total memory, as the reports print them."""
    cpu = mem = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    return cpu, mem


class Child:
    """A subprocess whose JSON stdout lines are read by a thread; stderr goes to `log`. It
    waits for "go" on stdin where the protocol says so, and stops on SIGTERM."""

    def __init__(self, log: Path, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        self.log = log
        self._err: TextIO = log.open("w")
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._err,
            text=True,
            cwd=cwd,
            env=env,
        )
        self.lines: queue.Queue[tuple[dict[str, Any] | None, float]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                self.lines.put((json.loads(line), time.perf_counter()))
        self.lines.put((None, time.perf_counter()))

    def wait_for(self, key: str, timeout: float) -> tuple[dict[str, Any], float]:
        """The first JSON line carrying `key`, and when it was read (perf_counter)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                msg, at = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise ChildTimeout(
                    f"no {key!r} from {self.log.name} within {timeout:.0f} s"
                ) from None
            if msg is None:
                self.proc.wait()
                raise BenchError(
                    f"{self.log.name} exited {self.proc.returncode} before {key!r}:\n"
                    f"{tail(self.log)}"
                )
            if key in msg:
                return msg, at

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._err.close()
        return self.proc.returncode
