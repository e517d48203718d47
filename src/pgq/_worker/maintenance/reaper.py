"""The reaper: running jobs whose lease expired go back to `retrying` (or `dead` on their last
attempt), with the reason; every worker runs it, the statement's SKIP LOCKED lets them share.
A lost lease counts toward its queue's circuit unless the circuit's `on` says otherwise."""

from __future__ import annotations

from pgq._backends.ports import Backend
from pgq._core.domain import DEFAULT_MAX_ATTEMPTS
from pgq._worker.events import Hooks, LeasesReaped
from pgq._worker.policies import QueuePolicies
from pgq._worker.results import ResultWriter

BATCH = 1000


class Reaper:
    name = "reaper"
    first_s = 0.0

    def __init__(
        self,
        backend: Backend,
        policies: QueuePolicies,
        writer: ResultWriter,
        hooks: Hooks,
        *,
        worker_id: str,
        every_s: float,
    ) -> None:
        self._backend = backend
        self._policies = policies
        self._writer = writer
        self._hooks = hooks
        self._worker_id = worker_id
        self.every_s = every_s

    def run(self, now: float) -> None:
        reaped = self._backend.reap_expired(limit=BATCH, default_max_attempts=DEFAULT_MAX_ATTEMPTS)
        if not reaped:
            return
        self._hooks.emit(LeasesReaped(self._worker_id, reaped))
        for queue, n in reaped.items():
            policy = self._policies.of(queue)
            if policy is not None and policy.circuit is not None and policy.circuit.counts(None):
                self._writer.count_failures(queue, n, "lease lost to the reaper")
