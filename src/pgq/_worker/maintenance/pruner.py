"""Retention: finished jobs past their queue's retention are deleted with their events, in
batches (SKIP LOCKED, so workers share the work), a bounded number of batches per run."""

from __future__ import annotations

import threading

from pgq._backends.ports import Backend
from pgq._worker.events import Hooks, JobsPruned

BATCH = 500
ROUNDS = 20  # batches per run at most, so the maintenance thread moves on


class Pruner:
    name = "retention"
    first_s = 1.0

    def __init__(
        self,
        backend: Backend,
        hooks: Hooks,
        halt: threading.Event,
        *,
        worker_id: str,
        every_s: float = 10.0,
    ) -> None:
        self._backend = backend
        self._hooks = hooks
        self._halt = halt
        self._worker_id = worker_id
        self.every_s = every_s

    def run(self, now: float) -> None:
        total = 0
        for _ in range(ROUNDS):
            n = self._backend.prune_finished(limit=BATCH)
            total += n
            if n == 0 or self._halt.is_set():
                break
        if total:
            self._hooks.emit(JobsPruned(self._worker_id, total))
