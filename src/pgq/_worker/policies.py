"""The queue policies a worker works with: those it declares, and every stored one."""

from __future__ import annotations

import math
from collections.abc import Sequence

from pgq._backends.ports import Backend
from pgq._core.policy import Queue, rate_bucket_s


class QueuePolicies:
    """`own`: the policies this worker declares (written at start, live settings on reload).
    `stored`: every queue's policy row, refreshed each second by the maintenance thread; retry
    settings and circuits follow these rows. Each refresh swaps the attributes whole, so
    readers in other threads need no lock."""

    def __init__(self, own: dict[str, Queue], served: Sequence[str] | None) -> None:
        self.own = own
        self.served = served
        self.stored: dict[str, Queue] = {}
        self.has_circuits = False  # some stored policy has a circuit
        self.rate_poll_s = math.inf  # idle wait while a rated queue is hot
        self.timeouts: dict[str, float] = {}  # queue timeouts, fixed at start (restart-only)

    def refresh(self, backend: Backend) -> None:
        stored = backend.read_policies()
        self.stored = stored
        self.has_circuits = any(p.circuit is not None for p in stored.values())
        served = self.served
        rated = [
            rate_bucket_s(p.rate)
            for name, p in stored.items()
            if p.rate is not None and (served is None or name in served)
        ]
        self.rate_poll_s = max(0.005, min(rated)) if rated else math.inf

    def fix_timeouts(self) -> None:
        """At start: queue timeouts are restart-only, so they are read once."""
        self.timeouts = {
            name: p.timeout for name, p in (self.stored | self.own).items() if p.timeout is not None
        }

    def of(self, queue: str) -> Queue | None:
        """The stored policy of a queue (what retries and the circuit follow)."""
        return self.stored.get(queue)

    def circuit_of(self, queue: str) -> Queue | None:
        """The policy that decides whether a failure counts toward the queue's circuit: its
        stored row, or this worker's own when it declares the circuit (its `on` holds
        exception classes, not just names). None when the queue has no circuit."""
        policy = self.stored.get(queue)
        if policy is None or policy.circuit is None:
            return None
        own = self.own.get(queue)
        return own if own is not None and own.circuit is not None else policy

    def is_rated(self, queue: str) -> bool:
        policy = self.stored.get(queue)
        return policy is not None and policy.rate is not None

    def is_paused(self, queue: str) -> bool:
        policy = self.stored.get(queue)
        return policy is not None and bool(policy.paused)
