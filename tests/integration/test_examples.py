"""Every file in examples/ runs to exit 0 against a real PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.py"))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(example: Path, pg_dsn: str) -> None:
    result = subprocess.run(
        [sys.executable, str(example)],
        env={**os.environ, "PGQ_DSN": pg_dsn},
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 3
