"""Claiming: which queues to ask, for how many jobs each, and when.

Fairness between queues: each claim asks every queue it serves for a share of the free slots
(`fair_shares`: a queue that filled its last share splits the free slots with the others that
did; the rest ask for one), and jobs of queues without a backlog skip ahead of a backlogged
queue's jobs waiting for a thread (the executor's express lane). Backlogged queues never take
the last `reserve` free slots, and a queue announced by NOTIFY that has no backlog is claimed at
once, however few slots are free: a flood that arrives while the worker runs keeps the buffer
full, and without both rules a quiet queue's job waited for a batch of flood jobs to finish.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from pgq._backends.ports import Backend
from pgq._core.errors import DatabaseError
from pgq._core.records import ClaimedJob
from pgq._core.tasks import Task
from pgq._worker.events import Hooks, JobsClaimed
from pgq._worker.executor import ThreadExecutor
from pgq._worker.policies import QueuePolicies
from pgq._worker.results import Stats
from pgq._worker.retrying import backoff_s, log_retry, retry_forever
from pgq._worker.slots import Slot, Slots

logger = logging.getLogger("pgq.worker")

MAX_CLAIM = 100  # rows per claim statement: PERFORMANCE.md found the plateau at about 100
MAX_PREFETCH = 400
BUFFER_S = 0.05  # adaptive prefetch: about this much work buffered at the observed duration
RESERVE = 4  # slots beyond the capacity for queues without a backlog (a quarter of it at most)


def fair_shares(
    free: int, queues: Sequence[str], busy: Collection[str], *, rotation: int = 0, reserve: int = 0
) -> list[tuple[str, int]]:
    """How many jobs to ask each queue for, in the order to ask them.

    The order rotates with `rotation`, so that no queue is always first. Without a backlogged
    queue (`busy`: it filled its last share), every queue asks for an equal share of `free`.
    Otherwise the backlogged queues split `free - reserve` and the others ask for one each: a
    queue that had nothing last time rarely has many now, and its job should not wait.

    >>> fair_shares(10, ["a", "b"], set())
    [('a', 5), ('b', 5)]
    >>> fair_shares(10, ["flood", "quiet"], {"flood"}, reserve=2)
    [('flood', 8), ('quiet', 1)]
    >>> fair_shares(2, ["flood", "quiet"], {"flood"}, reserve=2)
    [('quiet', 1)]
    >>> fair_shares(9, ["a", "b", "c"], set(), rotation=1)
    [('b', 3), ('c', 3), ('a', 3)]
    """
    n = len(queues)
    if n == 0 or free <= 0:
        return []
    start = rotation % n
    ordered = [*queues[start:], *queues[:start]]
    backlogged = [q for q in ordered if q in busy]
    if not backlogged:
        share = max(1, math.ceil(free / n))
        return [(q, share) for q in ordered]
    room = free - reserve
    share = math.ceil(room / len(backlogged)) if room > 0 else 0
    return [(q, share if q in busy else 1) for q in ordered if q not in busy or share > 0]


class Claimer:
    """The claim loop, run in the caller's thread by `Worker.run` / `run_until_empty`."""

    def __init__(
        self,
        backend: Backend,
        *,
        worker_id: str,
        queues: Sequence[str] | None,
        lease_s: float,
        poll_interval_s: float,
        prefetch: int | None,
        tasks: Mapping[str, Task[..., Any]],
        slots: Slots,
        executor: ThreadExecutor,
        policies: QueuePolicies,
        stats: Stats,
        hooks: Hooks,
    ) -> None:
        self._backend = backend
        self._worker_id = worker_id
        self._served = queues
        self._lease_s = lease_s
        self._poll_interval_s = poll_interval_s
        self._prefetch = prefetch
        self._tasks = tasks
        # A job enqueued without max_attempts gets its task's own, stamped at claim.
        self._max_attempts = {
            name: t.max_attempts for name, t in tasks.items() if t.max_attempts is not None
        }
        self._slots = slots
        self._executor = executor
        self._policies = policies
        self._stats = stats
        self._hooks = hooks
        self.wake = threading.Event()  # look again: results written, NOTIFY, stop
        self._notified_lock = threading.Lock()  # guards _notified
        self._notified: set[str] = set()  # queues announced by NOTIFY since the last claim
        self._known: list[str] = list(queues or [])
        self._busy: set[str] = set()  # queues that filled their last share: a backlog
        self._rotation = 0
        self._rate_hot_until = 0.0  # time.monotonic(): a rated queue gave jobs lately
        self._held_since: float | None = None  # burst mode: due jobs held back since
        # Claims on notify (the listener's thread) take turns with each other and with close().
        self._at_once_lock = threading.Lock()
        self._closed = False
        self._claimed_lock = threading.Lock()  # guards stats.claimed (two threads claim)

    def notified(self, queues: set[str]) -> None:
        """The listener heard of runnable jobs in these queues (called from its thread).

        Queues without a backlog are claimed right here, in the listener's thread on its own
        connection, if a slot is free (the reserve counts): the claim loop may be in the middle
        of a flood's 100-row claim, and a quiet queue's job should not wait for it. SKIP LOCKED
        keeps the two claims apart. The claim loop is woken for every queue announced that this
        did not empty (a backlog, no free slot, or a failed claim)."""
        urgent = sorted(self._quiet(queues))
        rest = queues - self._claim_at_once(urgent) if urgent else queues
        if rest:
            with self._notified_lock:
                self._notified |= rest
            self.wake.set()

    def _quiet(self, queues: set[str]) -> set[str]:
        """The queues announced that this worker serves and that show no backlog."""
        served, busy = self._served, self._busy
        return {q for q in queues if q not in busy and (served is None or q in served)}

    def _claim_at_once(self, queues: list[str]) -> set[str]:
        """Claim a few jobs of each queue; return those it emptied (nothing left for the claim
        loop to look at)."""
        with self._at_once_lock:
            if self._closed:
                return set()
            capacity = self.capacity
            reserve = min(RESERVE, capacity // 4)
            free = capacity + reserve - len(self._slots)
            # A few jobs each (a quiet queue's come one at a time); the claim loop takes the
            # rest by its batch rules, so that this claim stays short and a queue that is busy
            # after all cannot fill the express lane.
            wants = [(q, n) for q, n in fair_shares(free, queues, ()) if n > 0]
            wants = [(q, min(n, max(1, reserve))) for q, n in wants]
            if not wants:
                return set()
            try:
                jobs = self._backend.claim(
                    worker_id=self._worker_id,
                    wants=wants,
                    lease_s=self._lease_s,
                    max_attempts=self._max_attempts,
                )
            except DatabaseError as exc:  # the claim loop tries again: NOTIFY only wakes
                fields = {"worker_id": self._worker_id, "error": str(exc)}
                logger.warning("claim on notify failed", extra=fields)
                return set()
            got: dict[str, int] = {}
            for job in jobs:
                got[job.queue] = got.get(job.queue, 0) + 1
            asked = dict(wants)
            if jobs:
                self._hand_over(jobs, got, asked, ())
            return {q for q in asked if got.get(q, 0) < asked[q]}

    def close(self) -> None:
        """No claim on notify from now on (the run is ending; waits for one under way)."""
        with self._at_once_lock:
            self._closed = True

    @property
    def capacity(self) -> int:
        """Jobs this worker may hold (running, waiting for a thread, or being written)."""
        concurrency = self._executor.concurrency
        if self._prefetch is not None:
            return concurrency + self._prefetch
        wanted = concurrency * BUFFER_S / max(self._executor.avg_job_s, 1e-6)
        return concurrency + int(min(MAX_PREFETCH, max(concurrency, wanted)))

    def loop(self, stop: threading.Event, burst: float | None) -> None:
        """Claim until `stop` is set, or in burst mode until nothing is left to do."""
        refreshed_at = -math.inf
        failures = 0
        wake = self.wake
        while not stop.is_set():
            wake.clear()
            capacity = self.capacity
            in_flight = len(self._slots)
            room = min(capacity - in_flight, MAX_CLAIM)  # what backlogged queues may fill
            # A few slots beyond the capacity only queues without a backlog may take, so a
            # quiet queue's job never waits for a flood's slots to free up.
            reserve = min(RESERVE, capacity // 4)
            free = max(0, room) + reserve
            with self._notified_lock:
                notified, self._notified = self._notified, set()
            if self._served is None:
                if time.monotonic() - refreshed_at > self._poll_interval_s:
                    try:
                        self._known = self._backend.runnable_queues()
                    except DatabaseError as exc:
                        failures += 1
                        log_retry("claim", exc, self._worker_id, backoff_s(failures))
                        stop.wait(backoff_s(failures))
                        continue
                    refreshed_at = time.monotonic()
                    # A queue with no runnable job has no backlog. (A new set, never changed in
                    # place: the listener's thread reads it.)
                    self._busy = self._busy & set(self._known)
                self._known += sorted(notified - set(self._known))
            urgent = self._quiet(notified)
            # Claim in batches while a quarter of the capacity is free (or the threads ran
            # dry), so that claims and completions overlap instead of taking turns; a queue
            # without a backlog that NOTIFY announced is asked at once.
            full = room >= max(1, min(capacity // 4, 25)) or (
                room > 0 and self._executor.waiting() == 0
            )
            more = False
            if full or (urgent and free > 0):
                queues = self._known if full else sorted(urgent)
                try:
                    more = self._claim(queues, free, reserve) and full
                    failures = 0
                except DatabaseError as exc:
                    failures += 1
                    log_retry("claim", exc, self._worker_id, backoff_s(failures))
                    stop.wait(backoff_s(failures))
                    continue
            if more:
                continue
            if burst is not None and in_flight == 0:
                wait_s = self._burst_wait(burst)
                if wait_s is None:
                    return
                wake.wait(min(wait_s, self._poll_interval_s))
                continue
            idle_s = self._poll_interval_s
            if time.monotonic() < self._rate_hot_until:
                idle_s = min(idle_s, self._policies.rate_poll_s)  # a rate window may reopen
            wake.wait(idle_s)

    def _claim(self, queues: Sequence[str], free: int, reserve: int) -> bool:
        """Claim up to `free` jobs over `queues`; True if it took jobs and some queue may hold
        more (so the loop claims again at once; never after a claim that took nothing)."""
        wants = fair_shares(free, queues, self._busy, rotation=self._rotation, reserve=reserve)
        self._rotation += 1
        if not wants:
            return False
        jobs = self._backend.claim(
            worker_id=self._worker_id,
            wants=wants,
            lease_s=self._lease_s,
            max_attempts=self._max_attempts,
        )
        got: dict[str, int] = {}
        for job in jobs:
            got[job.queue] = got.get(job.queue, 0) + 1
        asked = dict(wants)
        backlogged = self._busy
        # A queue that filled a share has a backlog; one asked for a single job that gave it
        # shows none (unless it had one already); one not asked this time keeps its mark.
        self._busy = {q for q in backlogged if q not in asked} | {
            q for q, want in wants if got.get(q, 0) >= want and (want > 1 or q in backlogged)
        }
        if jobs:
            self._held_since = None
            self._hand_over(jobs, got, asked, backlogged)
            if self._policies.rate_poll_s < math.inf and any(
                self._policies.is_rated(q) for q in got
            ):
                self._rate_hot_until = time.monotonic() + self._policies.rate_poll_s * 25
        return bool(jobs) and bool(self._busy)

    def _hand_over(
        self,
        jobs: list[ClaimedJob],
        got: dict[str, int],
        wants: dict[str, int],
        backlogged: Collection[str],
    ) -> None:
        """Take slots for the claimed jobs and hand them to the executor. Jobs of a queue that
        had no backlog before this claim, or gave less than it was asked, go through the
        express lane: they skip a backlogged queue's jobs already waiting for a thread."""
        tasks, timeouts = self._tasks, self._policies.timeouts
        slots = []
        for job in jobs:
            task = tasks.get(job.task)
            timeout_s = task.timeout if task is not None else None
            slots.append(Slot(job, job.lease, task, timeout_s or timeouts.get(job.queue)))
        self._slots.add(slots)
        with self._claimed_lock:
            self._stats.claimed += len(jobs)
        self._hooks.emit(JobsClaimed(self._worker_id, jobs))
        executor = self._executor
        plain = {q for q, n in got.items() if q in backlogged and n >= wants[q] and n > 1}
        if len(got) == 1 and plain:
            executor.submit_many(slots)  # one backlogged queue: the plain lane, in claim order
            return
        for slot in slots:
            executor.submit(slot, express=slot.job.queue not in plain)

    def _burst_wait(self, max_wait: float) -> float | None:
        """In burst mode, how long to wait for the next due job; None to stop now."""
        if len(self._slots):
            return self._poll_interval_s
        backend = self._backend
        queues = self._served if self._served is not None else backend.runnable_queues()
        queues = [q for q in queues if not self._policies.is_paused(q)]
        if not queues:  # a paused queue's jobs are not runnable: burst mode leaves them
            return None
        due = retry_forever(
            "look for due jobs", self._worker_id, lambda: backend.next_due_in(queues)
        )
        if due is None or due > max_wait:
            return None
        if due > 0:
            self._held_since = None
            return max(due, 0.001)
        # A job is due, yet the last claim took nothing: a cap held by other workers, a rate
        # window or an open circuit holds it back. Look again at a modest pace, and leave
        # once it has been held back for longer than max_wait.
        now = time.monotonic()
        if self._held_since is None:
            self._held_since = now
        if now - self._held_since > max_wait:
            return None
        return min(self._poll_interval_s, max(0.01, self._policies.rate_poll_s))
