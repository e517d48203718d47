"""Circuits: open circuits whose cooldown passed are recorded as half-open (probes may run)."""

from __future__ import annotations

from pgq._backends.ports import Backend
from pgq._worker.events import CircuitMoved, Hooks
from pgq._worker.policies import QueuePolicies


class CircuitAdvancer:
    name = "circuits"
    first_s = 0.0

    def __init__(
        self,
        backend: Backend,
        policies: QueuePolicies,
        hooks: Hooks,
        *,
        worker_id: str,
        every_s: float = 1.0,
    ) -> None:
        self._backend = backend
        self._policies = policies
        self._hooks = hooks
        self._worker_id = worker_id
        self.every_s = every_s

    def run(self, now: float) -> None:
        if not any(p.circuit is not None for p in self._policies.stored.values()):
            return
        if self._backend.advance_circuits():
            self._hooks.emit(CircuitMoved(self._worker_id, "*", "half-open"))
