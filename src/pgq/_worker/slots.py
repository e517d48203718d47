"""A claimed job's slot, from its claim until its result is written, and the table of them.

A slot is held from the claim until the job's result is in the database, so `running` rows stay
bounded by the worker's capacity. The slot itself travels through the task queue and the result
queue, so a job's lease is built once.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pgq._core.domain import Lease
from pgq._core.records import ClaimedJob
from pgq._core.tasks import Task


class SlotState(enum.Enum):
    """Where a claimed job stands inside the worker. Each state says what moves it on."""

    WAITING = "waiting"  # claimed, waiting for a task thread -> RUNNING, RELEASED, LOST
    RUNNING = "running"  # its body runs -> FINISHED, ABANDONED, LOST
    FINISHED = "finished"  # its result is on the way to the database -> written (dropped)
    ABANDONED = "abandoned"  # past its timeout or the shutdown grace: its failure is on the
    # way; the body may still run, and what it returns is fenced off (discarded)
    LOST = "lost"  # its lease was taken back: whatever it returns is discarded
    RELEASED = "released"  # handed back unstarted at shutdown: no thread may start it


@dataclass(slots=True, eq=False)
class Slot:
    job: ClaimedJob
    lease: Lease
    task: Task[..., Any] | None
    timeout_s: float | None
    state: SlotState = SlotState.WAITING
    started_at: float | None = None  # time.monotonic() when its body started
    runner: threading.Thread | None = None  # the task thread running its body


class Slots:
    """The slots a worker holds. One lock guards the table and every slot's state; no I/O is
    done while holding it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[Lease, Slot] = {}

    def __len__(self) -> int:
        return len(self._held)

    def add(self, slots: Iterable[Slot]) -> None:
        with self._lock:
            for slot in slots:
                self._held[slot.lease] = slot

    def start(self, slot: Slot) -> bool:
        """Move a waiting slot to RUNNING; False if it may not start (released or lost)."""
        with self._lock:
            if slot.state is not SlotState.WAITING:
                return False
            slot.state = SlotState.RUNNING
            slot.started_at = time.monotonic()
            return True

    def finish(self, slot: Slot) -> bool:
        """The body returned. True if the slot had been abandoned meanwhile (a replacement
        thread took its thread's place)."""
        with self._lock:
            was = slot.state
            if was is SlotState.RUNNING:
                slot.state = SlotState.FINISHED
            return was is SlotState.ABANDONED

    def abandon_overdue(self, now: float) -> list[Slot]:
        """Running slots past their timeout move to ABANDONED; return them."""
        out = []
        with self._lock:
            for slot in self._held.values():
                if (
                    slot.state is SlotState.RUNNING
                    and slot.timeout_s is not None
                    and slot.started_at is not None
                    and now - slot.started_at > slot.timeout_s
                ):
                    slot.state = SlotState.ABANDONED
                    out.append(slot)
        return out

    def abandon_running(self) -> list[Slot]:
        """At the end of the shutdown grace: every running slot moves to ABANDONED."""
        with self._lock:
            out = [s for s in self._held.values() if s.state is SlotState.RUNNING]
            for slot in out:
                slot.state = SlotState.ABANDONED
        return out

    def release_waiting(self) -> list[Lease]:
        """At shutdown: waiting slots move to RELEASED and leave the table; their leases."""
        with self._lock:
            out = [s for s in self._held.values() if s.state is SlotState.WAITING]
            for slot in out:
                slot.state = SlotState.RELEASED
                del self._held[slot.lease]
        return [s.lease for s in out]

    def live_leases(self) -> list[Lease]:
        """The leases the heartbeat extends: slots waiting or running."""
        with self._lock:
            return [
                lease
                for lease, s in self._held.items()
                if s.state in (SlotState.WAITING, SlotState.RUNNING)
            ]

    def mark_lost(self, leases: Iterable[Lease]) -> list[Slot]:
        """Leases the heartbeat could not extend: a waiting slot leaves the table (nothing to
        wait for), a running one moves to LOST. Return the slots that were lost (a slot whose
        result was written or is on its way meanwhile is not)."""
        out = []
        with self._lock:
            for lease in leases:
                slot = self._held.get(lease)
                if slot is None or slot.state not in (SlotState.WAITING, SlotState.RUNNING):
                    continue
                if slot.state is SlotState.WAITING:
                    del self._held[lease]
                slot.state = SlotState.LOST
                out.append(slot)
        return out

    def drop(self, leases: Iterable[Lease]) -> None:
        """Results written: these slots are free."""
        with self._lock:
            for lease in leases:
                self._held.pop(lease, None)
