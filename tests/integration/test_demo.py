"""`pgq demo`, the README's main command, runs end to end."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.timeout(120)
def test_demo_runs_end_to_end(pg_dsn: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pgq", "demo", "--jobs", "300"],
        env={**os.environ, "PGQ_DSN": pg_dsn, "COLUMNS": "160"},
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert "pgq demo summary" in out
    assert "jobs/s" in out and "pickup latency" in out
    assert "one retried job's timeline" in out and "a dead job keeps its last error" in out
