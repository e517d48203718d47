"""Running attempts: `concurrency` long-lived task threads fed through a SimpleQueue.

A Future per job (ThreadPoolExecutor.submit) cost more GIL time than the database round trips
(PERFORMANCE.md), so slots travel through a SimpleQueue to threads that live as long as the
run. Jobs of queues without a backlog take the express lane: a deque the threads look at
first, so that a flood's buffered jobs never delay another queue's job. An event loop for
`async def` tasks will sit beside these threads.
"""

from __future__ import annotations

import collections
import itertools
import logging
import queue as queue_mod
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from pgq._core.records import ClaimedJob
from pgq._core.tasks import Task
from pgq._worker.attempt import Failed, judge, prepare
from pgq._worker.attempt import call as call_task
from pgq._worker.policies import QueuePolicies
from pgq._worker.slots import Slot, Slots

logger = logging.getLogger("pgq.worker")

# In the task queue: "a job waits in the express lane" (compared by identity).
_EXPRESS: Final = object()
_STOP: Final = None

# Where a finished attempt goes: (slot, None) on success, (slot, Failed) otherwise. The
# flusher's queue.put itself, so that handing a result over costs no Python frame.
Sink = Callable[[tuple[Slot, Failed | None]], None]


class ThreadExecutor:
    """Runs task bodies on named threads (`pgq-task-N`) and hands each result to `sink`."""

    def __init__(
        self,
        *,
        concurrency: int,
        tasks: Mapping[str, Task[..., Any]],
        policies: QueuePolicies,
        slots: Slots,
        sink: Sink,
    ) -> None:
        self.concurrency = concurrency
        self._tasks = tasks
        self._policies = policies
        self._slots = slots
        self._sink = sink
        self._todo: queue_mod.SimpleQueue[Slot | object | None] = queue_mod.SimpleQueue()
        self._express: collections.deque[Slot] = collections.deque()
        self._seq = itertools.count()
        self._threads: list[threading.Thread] = []
        self._stuck: set[threading.Thread] = set()  # threads inside an abandoned body
        self._halt = threading.Event()
        self.avg_job_s = 1.0  # moving average of body durations, for adaptive prefetch

    def start(self) -> None:
        for _ in range(self.concurrency):
            self._spawn()

    def _spawn(self) -> None:
        me: list[threading.Thread] = []  # the thread, for its own loop to know
        thread = threading.Thread(
            target=self._loop, args=(me,), name=f"pgq-task-{next(self._seq)}", daemon=True
        )
        me.append(thread)
        thread.start()
        self._threads.append(thread)

    def submit(self, slot: Slot, *, express: bool = False) -> None:
        if express:
            self._express.append(slot)
            self._todo.put(_EXPRESS)  # wakes an idle thread; busy ones look first anyway
        else:
            self._todo.put(slot)

    def submit_many(self, slots: list[Slot]) -> None:
        """The plain lane, in order: one backlogged queue's jobs behind those waiting already."""
        put = self._todo.put
        for slot in slots:
            put(slot)

    def waiting(self) -> int:
        """Jobs handed over that no thread has taken yet (about)."""
        return self._todo.qsize()

    def enforce_timeouts(self, now: float) -> None:
        """Attempts past their timeout fail now; each stuck thread is replaced, so that
        concurrency stays whole (a Python thread cannot be stopped)."""
        for slot in self._slots.abandon_overdue(now):
            if slot.runner is not None:
                self._stuck.add(slot.runner)
            error = TimeoutError(f"task {slot.job.task} ran past its timeout of {slot.timeout_s}s")
            policy = self._policies.of(slot.job.queue)
            self._sink((slot, judge(slot.job, slot.task, error, policy)))
            self._spawn()

    def abandon(self, slot: Slot, error: BaseException) -> None:
        """Fail an attempt that still runs (the shutdown grace ended); not counted toward the
        queue's circuit, since it says nothing about the downstream."""
        failed = judge(slot.job, slot.task, error, self._policies.of(slot.job.queue), counts=False)
        self._sink((slot, failed))

    def stop(self, timeout_s: float) -> list[str]:
        """End every thread: each idle one takes a stop marker; wait up to `timeout_s` in all
        for them (not for those inside a body abandoned past its timeout: Python cannot stop a
        thread). Return the names of the threads still running."""
        self._halt.set()
        for _ in range(self.concurrency):
            self._todo.put(_STOP)
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            if thread not in self._stuck:
                thread.join(max(0.0, deadline - time.monotonic()))
        return [t.name for t in self._threads if t.is_alive()]

    def _next(self) -> Slot | None:
        express = self._express
        while True:
            try:
                return express.popleft()
            except IndexError:
                pass
            item = self._todo.get()
            if item is _STOP:
                return None
            if item is _EXPRESS:
                continue
            assert isinstance(item, Slot)
            return item

    def _loop(self, me: list[threading.Thread]) -> None:
        [thread] = me
        while (slot := self._next()) is not None:
            if self._halt.is_set() or not self._slots.start(slot):
                continue  # released or lost before it started
            slot.runner = thread
            if self._run(slot):
                return  # abandoned: a replacement thread took this one's place

    def _run(self, slot: Slot) -> bool:
        """Run one attempt; True if the slot was abandoned while it ran."""
        job: ClaimedJob = slot.job
        stored = self._policies.stored
        prepared = prepare(job, self._tasks, stored)
        if isinstance(prepared, Failed):
            self._slots.finish(slot)
            self._sink((slot, prepared))
            return False
        task, kwargs = prepared
        started = time.monotonic()
        try:
            call_task(task, kwargs)
            result: Failed | None = None
        except Exception as exc:
            result = judge(job, task, exc, stored.get(job.queue))
        # Unlocked read-modify-write: a lost update only blurs an average.
        self.avg_job_s += 0.05 * ((time.monotonic() - started) - self.avg_job_s)
        abandoned = self._slots.finish(slot)
        self._sink((slot, result))
        return abandoned
