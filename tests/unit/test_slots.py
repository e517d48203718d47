"""The slot table's moves (pgq._worker.slots): each SlotState and what moves it on."""

from __future__ import annotations

from pgq._core.domain import Lease
from pgq._core.records import ClaimedJob
from pgq._worker.slots import Slot, Slots, SlotState


def slot(n: int, timeout_s: float | None = None) -> Slot:
    job = ClaimedJob(n, "default", "t", {}, 1, None, "w1")
    return Slot(job, Lease(n, 1, "w1"), None, timeout_s)


def test_a_slot_runs_once_and_only_from_waiting() -> None:
    table, s = Slots(), slot(1)
    table.add([s])
    assert table.start(s) and s.state is SlotState.RUNNING and s.started_at is not None
    assert not table.start(s)  # never twice
    assert table.finish(s) is False and s.state is SlotState.FINISHED
    assert table.live_leases() == []  # its result is on its way: no heartbeat for it
    table.drop([s.lease])
    assert len(table) == 0


def test_released_and_lost_slots_never_start() -> None:
    table, waiting, lost = Slots(), slot(1), slot(2)
    table.add([waiting, lost])
    assert table.mark_lost([lost.lease]) == [lost] and lost.state is SlotState.LOST
    assert table.release_waiting() == [waiting.lease]
    assert waiting.state is SlotState.RELEASED and len(table) == 0
    assert not table.start(waiting) and not table.start(lost)


def test_a_running_slot_lost_stays_until_its_result_is_written() -> None:
    table, s = Slots(), slot(1)
    table.add([s])
    table.start(s)
    assert table.mark_lost([s.lease]) == [s] and s.state is SlotState.LOST and len(table) == 1
    assert table.finish(s) is False and s.state is SlotState.LOST  # discarded when written


def test_overdue_and_shutdown_abandon_only_running_slots() -> None:
    table, slow, quick, idle = Slots(), slot(1, timeout_s=0.5), slot(2), slot(3)
    table.add([slow, quick, idle])
    table.start(slow)
    table.start(quick)
    assert slow.started_at is not None
    assert table.abandon_overdue(slow.started_at + 1.0) == [slow]
    assert slow.state is SlotState.ABANDONED
    assert table.finish(slow) is True  # its thread was replaced: it ends after this body
    assert table.abandon_running() == [quick] and idle.state is SlotState.WAITING
    assert sorted(lease.job_id for lease in table.live_leases()) == [3]
