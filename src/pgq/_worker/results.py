"""Writing finished attempts: failures one by one, completions in one statement, the circuits
fed from the same batch. `Worker` (through `Flusher`) and `InMemoryBackend.run_until_empty`
(through `pgq._worker.inline`) write results with the same `ResultWriter`."""

from __future__ import annotations

import contextlib
import logging
import queue as queue_mod
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pgq._backends.ports import Backend
from pgq._core.domain import GiveUp, Lease
from pgq._core.errors import DatabaseError
from pgq._core.records import ClaimedJob
from pgq._worker.attempt import Failed, counts_for_circuit
from pgq._worker.events import AttemptsFinished, CircuitMoved, FinishedAttempt, Hooks
from pgq._worker.policies import QueuePolicies
from pgq._worker.retrying import backoff_s, log_retry
from pgq._worker.slots import Slot, Slots

logger = logging.getLogger("pgq.worker")

MAX_FLUSH = 500  # results per write: the fenced statements look attempts up by position

# A finished attempt: its job, the lease it ran under (built once, at claim), and how it failed
# (None: it succeeded).
Result = tuple[ClaimedJob, Lease, Failed | None]


@dataclass(slots=True)
class Stats:
    """What a worker did, counted from what the database confirmed."""

    claimed: int = 0
    completed: int = 0
    failed: int = 0
    dead: int = 0
    discarded: int = 0


@dataclass(slots=True)
class Written:
    leases: list[Lease] = field(default_factory=list)  # every result of the batch, written or not
    completed: int = 0
    failed: int = 0
    dead: int = 0
    discarded: int = 0


class ResultWriter:
    """Writes batches of results and feeds the circuits; tells the hooks what happened."""

    def __init__(
        self,
        backend: Backend,
        *,
        worker_id: str,
        policies: QueuePolicies,
        hooks: Hooks,
    ) -> None:
        self._backend = backend
        self._worker_id = worker_id
        self._policies = policies
        self._hooks = hooks

    def write(self, results: Sequence[Result]) -> Written:
        """Write one batch. A DatabaseError leaves the batch to be written again (results
        already written are then fenced off as discarded: their leases are gone)."""
        backend = self._backend
        out = Written(leases=[lease for _, lease, _ in results])
        attempts: list[FinishedAttempt] = []  # all but completions
        completed: list[ClaimedJob] = []
        # Failures first: when a timed-out attempt's failure and its body's late success meet
        # in one batch, the failure stands and the late success is fenced off (discarded).
        for job, lease, failed in results:
            if failed is None:
                continue
            if not backend.fail(lease, failed.outcome, error=failed.error):
                out.discarded += 1
                attempts.append(FinishedAttempt(job, "discarded", failed.error))
            elif isinstance(failed.outcome, GiveUp):
                out.failed += 1
                out.dead += 1
                attempts.append(FinishedAttempt(job, "dead", failed.outcome.reason))
            else:
                out.failed += 1
                attempts.append(FinishedAttempt(job, "retried", failed.error))
        successes = [(job, lease) for job, lease, failed in results if failed is None]
        held = backend.complete_many([lease for _, lease in successes]) if successes else set()
        for job, lease in successes:
            if lease in held:
                completed.append(job)
            else:
                out.discarded += 1
                attempts.append(FinishedAttempt(job, "discarded", "completed"))
        # Its own errors stay its own: the results above are written, and writing them again
        # would find their leases gone and record them as discarded.
        try:
            self._feed_circuits(results, held)
        except DatabaseError as exc:
            logger.warning(
                "circuit update failed; will retry",
                extra={"worker_id": self._worker_id, "error": str(exc)},
            )
        out.completed = len(completed)
        self._hooks.emit(AttemptsFinished(self._worker_id, completed, attempts))
        return out

    def _feed_circuits(self, results: Sequence[Result], completed: set[Lease]) -> None:
        """Count this batch's failures toward their queues' circuits; close half-open
        circuits whose probes succeeded. Only queues with a circuit cost a statement."""
        policies = self._policies
        if not policies.has_circuits:
            return
        failures: dict[str, tuple[int, str]] = {}
        probes: set[str] = set()
        for job, lease, failed in results:
            policy = policies.circuit_of(job.queue)
            if policy is None:
                continue
            if failed is None:
                if job.probe and lease in completed:
                    probes.add(job.queue)
            elif counts_for_circuit(failed, policy):
                n, _ = failures.get(job.queue, (0, ""))
                failures[job.queue] = (n + 1, failed.error)
        for queue in probes:
            if self._backend.record_probe_success(queue, worker_id=self._worker_id):
                self._hooks.emit(CircuitMoved(self._worker_id, queue, "closed"))
        for queue, (n, error) in failures.items():
            self.count_failures(queue, n, error)

    def count_failures(self, queue: str, n: int, error: str) -> None:
        """Count n failures toward a queue's circuit (the reaper's lost leases too)."""
        moved = self._backend.record_circuit_failures(
            queue, count=n, error=error, worker_id=self._worker_id
        )
        if moved is not None:
            self._hooks.emit(CircuitMoved(self._worker_id, queue, moved, error))


class Flusher:
    """The `pgq-flusher` thread: takes finished slots from the task threads and writes them in
    batches (all that gathered while the last batch was written), then frees their slots."""

    def __init__(
        self,
        writer: ResultWriter,
        slots: Slots,
        stats: Stats,
        *,
        worker_id: str,
        on_written: Callable[[], None],
    ) -> None:
        self._writer = writer
        self._slots = slots
        self._stats = stats
        self._worker_id = worker_id
        self._on_written = on_written
        # Results from the task threads; None only wakes the thread (at shutdown).
        self._queue: queue_mod.SimpleQueue[tuple[Slot, Failed | None] | None] = (
            queue_mod.SimpleQueue()
        )

        self.put = self._queue.put  # what the task threads hand (slot, failed | None) to

    def wake(self) -> None:
        self._queue.put(None)

    def is_idle(self) -> bool:
        return self._queue.empty()

    def loop(self, halt: threading.Event) -> None:
        failures = 0
        pending: list[tuple[Slot, Failed | None]] = []
        while not (halt.is_set() and not pending and self._queue.empty()):
            if not pending:
                try:
                    item = self._queue.get(timeout=0.2)
                except queue_mod.Empty:
                    continue
                if item is None:
                    continue
                pending.append(item)
            with contextlib.suppress(queue_mod.Empty):
                while len(pending) < MAX_FLUSH:
                    item = self._queue.get_nowait()
                    if item is not None:
                        pending.append(item)
            try:
                written = self._writer.write([(s.job, s.lease, failed) for s, failed in pending])
            except DatabaseError as exc:
                failures += 1
                log_retry("writing results", exc, self._worker_id, backoff_s(failures))
                time.sleep(backoff_s(failures))
                continue
            pending = []
            failures = 0
            self._slots.drop(written.leases)
            stats = self._stats
            stats.completed += written.completed
            stats.failed += written.failed
            stats.dead += written.dead
            stats.discarded += written.discarded
            self._on_written()
