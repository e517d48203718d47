from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration._procs import Procs
from tests.postgres import PgSchema


@pytest.fixture
def procs(pg_schema: PgSchema, tmp_path: Path) -> Iterator[Procs]:
    """Starts workers on this test's schema; every one still running is killed afterwards."""
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    started = Procs(pg_schema, log_dir)
    try:
        yield started
    finally:
        started.close()


@pytest.fixture
def marker_dir(tmp_path: Path) -> Path:
    """Where tests.tasks.sleep_and_record / record leave their start- and done- files."""
    path = tmp_path / "markers"
    path.mkdir()
    return path
