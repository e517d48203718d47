"""Task timeouts: attempts past their timeout fail, and their stuck threads are replaced."""

from __future__ import annotations

from pgq._worker.executor import ThreadExecutor


class Timeouts:
    name = "timeouts"
    first_s = 0.0

    def __init__(self, executor: ThreadExecutor, *, every_s: float = 0.25) -> None:
        self._executor = executor
        self.every_s = every_s

    def run(self, now: float) -> None:
        self._executor.enforce_timeouts(now)
