"""The policy refresh: every queue's stored policy, read each second, so that retries, circuits
and rates follow what other workers and the CLI wrote."""

from __future__ import annotations

from pgq._backends.ports import Backend
from pgq._worker.policies import QueuePolicies


class PolicyRefresh:
    name = "policies"
    first_s = 0.0

    def __init__(self, backend: Backend, policies: QueuePolicies, *, every_s: float = 1.0):
        self._backend = backend
        self._policies = policies
        self.every_s = every_s

    def run(self, now: float) -> None:
        self._policies.refresh(self._backend)
