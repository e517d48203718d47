"""The heartbeat: the worker's row and every lease it holds, extended every lease/3 in one
statement each. A lease that could not be extended was taken back: its slot is lost."""

from __future__ import annotations

from collections.abc import Callable

from pgq._backends.ports import Backend
from pgq._worker.events import Hooks, LeasesLost
from pgq._worker.slots import Slots


class Heartbeat:
    name = "heartbeat"

    def __init__(
        self,
        backend: Backend,
        slots: Slots,
        hooks: Hooks,
        *,
        worker_id: str,
        lease_s: float,
        on_lost: Callable[[], None],
    ) -> None:
        self._backend = backend
        self._slots = slots
        self._hooks = hooks
        self._worker_id = worker_id
        self._lease_s = lease_s
        self._on_lost = on_lost
        self.every_s = lease_s / 3
        self.first_s = lease_s / 3

    def run(self, now: float) -> None:
        leases = self._slots.live_leases()
        self._backend.worker_heartbeat(self._worker_id)
        if not leases:
            return
        held = self._backend.extend_leases(leases, lease_s=self._lease_s)
        missing = [lease for lease in leases if lease not in held]
        if not missing:
            return
        lost = self._slots.mark_lost(missing)
        if lost:
            self._hooks.emit(LeasesLost(self._worker_id, [s.lease for s in lost]))
            self._on_lost()
