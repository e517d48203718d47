"""Clocks for the in-memory backend, which plays the database: its clock plays now()."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta


class Clock:
    """Wall time plus an offset that `advance` moves forward: ticks on its own, and a test (or
    `run_until_empty`) can jump it to when the next job is due instead of sleeping."""

    def __init__(self) -> None:
        self._offset = timedelta(0)
        self._lock = threading.Lock()  # guards _offset

    def now(self) -> datetime:
        with self._lock:
            return datetime.now(UTC) + self._offset

    def advance(self, seconds: float) -> None:
        """Move now() forward by `seconds`."""
        if seconds < 0:
            raise ValueError(f"a clock only moves forward, got {seconds!r} seconds")
        with self._lock:
            self._offset += timedelta(seconds=seconds)

    def advance_to(self, when: datetime) -> None:
        """Move now() forward to `when` (no-op if it is already later)."""
        gap = (when - self.now()).total_seconds()
        if gap > 0:
            self.advance(gap)


class FrozenClock(Clock):
    """A clock that stands still until `advance` moves it: deterministic tests."""

    def __init__(self, start: datetime | None = None) -> None:
        super().__init__()
        self._at = start or datetime(2026, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        with self._lock:
            return self._at

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"a clock only moves forward, got {seconds!r} seconds")
        with self._lock:
            self._at += timedelta(seconds=seconds)
