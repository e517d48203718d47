"""The in-memory backend: same states, transitions, fencing and retry rules as PostgreSQL.

It makes no decision of its own: it applies `_domain` (TRANSITIONS, after_lease_expired) and the
outcomes the worker computed, as the PostgreSQL backend does. A movable clock plays now().
There are no transactions: an enqueue is visible at once, and nothing rolls back.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from pgq._backends.clock import Clock
from pgq._core.decisions import (
    RELEASED_ON_SHUTDOWN,
    claim_allowance,
    discarded_error,
    first_set,
    lease_expired_error,
    rate_window_s,
    retention_s,
)
from pgq._core.domain import (
    DISCARDED,
    RUNNABLE,
    TRANSITIONS,
    CircuitState,
    CircuitView,
    GiveUp,
    Lease,
    Outcome,
    RetryIn,
    State,
    after_lease_expired,
    can_move,
    circuit_as_of,
    circuit_at,
)
from pgq._core.errors import InvalidTransition, JobNotFound
from pgq._core.policy import (
    CircuitMove,
    Queue,
    circuit_failed,
    circuit_writes,
    live_update,
    probe_succeeded,
    rate_bucket_s,
)
from pgq._core.records import (
    ClaimedJob,
    Enqueued,
    JobEvent,
    JobRecord,
    NewJob,
    QueueEvent,
    QueueInfo,
)

if TYPE_CHECKING:
    from pgq._backends.ports import Backend


@dataclass(slots=True)
class _Row:
    id: int
    queue: str
    task: str
    args_json: str
    state: State
    priority: int
    attempt: int
    max_attempts: int | None
    run_at: datetime
    created_at: datetime
    idempotency_key: str | None
    finished_at: datetime | None = None
    worker_id: str | None = None
    lease_expires_at: datetime | None = None
    last_error: str | None = None
    events: list[JobEvent] = field(default_factory=list)


@dataclass(slots=True)
class _QueueRow:
    """A queue's policy row: the policy, the paused flag, the circuit, recent rate buckets."""

    policy: Queue
    circuit: CircuitView
    paused: bool = False
    starts: dict[datetime, int] = field(default_factory=dict)  # bucket start -> job starts
    events: list[QueueEvent] = field(default_factory=list)


class MemoryListener:
    def __init__(self, backend: MemoryBackend) -> None:
        self._backend = backend
        self.pending: set[str] = set()  # guarded by the backend's lock
        self.interrupted = False  # likewise

    def wait(self, timeout_s: float) -> set[str]:
        with self._backend._wake:
            self._backend._wake.wait_for(
                lambda: bool(self.pending) or self.interrupted, timeout=timeout_s
            )
            got, self.pending = self.pending, set()
            return got

    def interrupt(self) -> None:
        with self._backend._wake:
            self.interrupted = True
            self._backend._wake.notify_all()

    def close(self) -> None:
        with self._backend._lock:
            self._backend._listeners.discard(self)


class MemoryBackend:
    """Storage held in memory: the rows and their moves, every decision taken from `_core`.
    Users get it as `pgq.testing.InMemoryBackend`, which adds the synchronous driver."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock or Clock()
        # Guards every field below; held only for in-memory work, never while a task runs.
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._listeners: set[MemoryListener] = set()
        self._jobs: dict[int, _Row] = {}
        self._keys: dict[tuple[str, str], int] = {}
        self._workers: dict[str, datetime] = {}
        self._restart_required: dict[str, list[str]] = {}
        self._queues: dict[str, _QueueRow] = {}
        self._ids = itertools.count(1)

    # -- helpers (call with the lock held) ---------------------------------------------------

    def _event(
        self,
        row: _Row,
        to_state: str,
        *,
        from_state: str | None,
        worker_id: str | None = None,
        error: str | None = None,
    ) -> None:
        row.events.append(
            JobEvent(
                from_state=from_state,
                to_state=to_state,
                attempt=row.attempt,
                at=self.clock.now(),
                worker_id=worker_id,
                error=error,
            )
        )

    def _move(
        self, row: _Row, to: State, *, worker_id: str | None = None, error: str | None = None
    ) -> None:
        if not can_move(row.state, to):
            raise AssertionError(f"in-memory backend broke the state table: {row.state} -> {to}")
        before = row.state
        row.state = to
        self._event(row, str(to), from_state=str(before), worker_id=worker_id, error=error)

    def _held(self, lease: Lease) -> _Row | None:
        row = self._jobs.get(lease.job_id)
        if (
            row is None
            or row.state is not State.RUNNING
            or row.attempt != lease.attempt
            or row.worker_id != lease.worker_id
        ):
            return None
        return row

    def _discard(self, lease: Lease, what: str) -> None:
        row = self._jobs.get(lease.job_id)
        if row is not None:
            row.events.append(
                JobEvent(
                    from_state=str(row.state),
                    to_state=DISCARDED,
                    attempt=lease.attempt,
                    at=self.clock.now(),
                    worker_id=lease.worker_id,
                    error=discarded_error(what),
                )
            )

    def _notify(self, queues: Iterable[str]) -> None:
        """NOTIFY: wake the listeners, telling them which queues have new runnable jobs."""
        queues = set(queues)
        for listener in self._listeners:
            listener.pending |= queues
        self._wake.notify_all()

    def _record(self, row: _Row) -> JobRecord:
        return JobRecord(
            id=row.id,
            queue=row.queue,
            task=row.task,
            args=json.loads(row.args_json),
            state=str(row.state),
            attempt=row.attempt,
            max_attempts=row.max_attempts,
            last_error=row.last_error,
            run_at=row.run_at,
            created_at=row.created_at,
            finished_at=row.finished_at,
            priority=row.priority,
            idempotency_key=row.idempotency_key,
            worker_id=row.worker_id,
            lease_expires_at=row.lease_expires_at,
            events=list(row.events),
        )

    # -- enqueue ---------------------------------------------------------------------------

    def enqueue_many(self, jobs: Sequence[NewJob]) -> list[Enqueued]:
        out: list[Enqueued] = []
        with self._lock:
            now = self.clock.now()
            for job in jobs:
                key = (job.queue, job.idempotency_key) if job.idempotency_key else None
                if key is not None and key in self._keys:
                    out.append(Enqueued(id=self._keys[key], created=False))
                    continue
                row = _Row(
                    id=next(self._ids),
                    queue=job.queue,
                    task=job.task,
                    args_json=job.args_json,
                    state=State.QUEUED,
                    priority=job.priority,
                    attempt=0,
                    max_attempts=job.max_attempts,
                    run_at=(job.run_at or now) + timedelta(seconds=job.delay_s),
                    created_at=now,
                    idempotency_key=job.idempotency_key,
                )
                self._event(row, str(State.QUEUED), from_state=None)
                self._jobs[row.id] = row
                if key is not None:
                    self._keys[key] = row.id
                out.append(Enqueued(id=row.id, created=True))
            self._notify(j.queue for j in jobs)
        return out

    # -- worker ----------------------------------------------------------------------------

    def claim(
        self,
        *,
        worker_id: str,
        wants: Sequence[tuple[str, int]],
        lease_s: float,
        max_attempts: Mapping[str, int] | None = None,
    ) -> list[ClaimedJob]:
        claimed: list[ClaimedJob] = []
        with self._lock:
            now = self.clock.now()
            for queue, wanted in wants:
                limit, probe = self._allowance(queue, wanted, now)
                if limit <= 0:
                    continue
                runnable = sorted(
                    (
                        r
                        for r in self._jobs.values()
                        if r.queue == queue and r.state in RUNNABLE and r.run_at <= now
                    ),
                    key=lambda r: (r.priority, r.run_at, r.id),
                )[:limit]
                for row in runnable:
                    if row.max_attempts is None and max_attempts:
                        row.max_attempts = max_attempts.get(row.task)
                    row.attempt += 1
                    row.worker_id = worker_id
                    row.lease_expires_at = now + timedelta(seconds=lease_s)
                    self._move(row, State.RUNNING, worker_id=worker_id)
                    claimed.append(
                        ClaimedJob(
                            id=row.id,
                            queue=row.queue,
                            task=row.task,
                            args=json.loads(row.args_json),
                            attempt=row.attempt,
                            max_attempts=row.max_attempts,
                            worker_id=worker_id,
                            probe=probe,
                        )
                    )
                q = self._queues.get(queue)
                if runnable and q is not None and q.policy.rate is not None:
                    bucket = _bucket(now, rate_bucket_s(q.policy.rate))
                    q.starts[bucket] = q.starts.get(bucket, 0) + len(runnable)
        return claimed

    def _allowance(self, queue: str, wanted: int, now: datetime) -> tuple[int, bool]:
        """How many jobs `queue` may give now, and whether they are half-open probes: the
        decision is _core.decisions.claim_allowance, as the PostgreSQL claim statement's."""
        q = self._queues.get(queue)
        if q is None:
            return wanted, False
        policy = q.policy
        running = sum(1 for r in self._jobs.values() if r.queue == queue and r.lease_expires_at)
        starts = 0
        if policy.rate is not None:
            since = now - timedelta(seconds=rate_window_s(policy))
            for at in [at for at in q.starts if at <= since]:
                del q.starts[at]  # out of every window that can still matter
            starts = sum(q.starts.values())
        circuit = (
            circuit_at(q.circuit, now, cooldown_s=policy.circuit.cooldown)
            if policy.circuit is not None
            else CircuitState.CLOSED
        )
        allowed = claim_allowance(
            wanted, policy, paused=q.paused, circuit=circuit, running=running, recent_starts=starts
        )
        return allowed.limit, allowed.probe

    def extend_leases(self, leases: Sequence[Lease], *, lease_s: float) -> set[Lease]:
        held: set[Lease] = set()
        with self._lock:
            until = self.clock.now() + timedelta(seconds=lease_s)
            for lease in leases:
                row = self._held(lease)
                if row is not None:
                    row.lease_expires_at = until
                    held.add(lease)
        return held

    def complete_many(self, leases: Sequence[Lease]) -> set[Lease]:
        done: set[Lease] = set()
        with self._lock:
            for lease in leases:
                row = self._held(lease)
                if row is None:
                    self._discard(lease, "completed")
                    continue
                row.finished_at = self.clock.now()
                row.lease_expires_at = None
                self._move(row, State.COMPLETED, worker_id=lease.worker_id)
                done.add(lease)
        return done

    def fail(self, lease: Lease, outcome: Outcome, *, error: str) -> bool:
        with self._lock:
            row = self._held(lease)
            if row is None:
                self._discard(lease, error if isinstance(outcome, RetryIn) else outcome.reason)
                return False
            now = self.clock.now()
            row.lease_expires_at = None
            if isinstance(outcome, RetryIn):
                row.run_at = now + timedelta(seconds=outcome.delay_s)
                row.last_error = error
                self._move(row, State.RETRYING, worker_id=lease.worker_id, error=error)
                self._notify([row.queue])
            else:
                assert isinstance(outcome, GiveUp)
                row.finished_at = now
                row.last_error = outcome.reason
                self._move(row, State.DEAD, worker_id=lease.worker_id, error=outcome.reason)
            return True

    def release(self, leases: Sequence[Lease]) -> int:
        n = 0
        released: set[str] = set()
        with self._lock:
            for lease in leases:
                row = self._held(lease)
                if row is None:
                    continue
                row.attempt -= 1
                row.lease_expires_at = None
                self._move(
                    row,
                    State.QUEUED,
                    worker_id=lease.worker_id,
                    error=RELEASED_ON_SHUTDOWN,
                )
                n += 1
                released.add(row.queue)
            self._notify(released)
        return n

    def reap_expired(self, *, limit: int, default_max_attempts: int) -> dict[str, int]:
        reaped: dict[str, int] = {}
        with self._lock:
            now = self.clock.now()
            expired = sorted(
                (
                    r
                    for r in self._jobs.values()
                    if r.state is State.RUNNING
                    and r.lease_expires_at is not None
                    and r.lease_expires_at < now
                ),
                key=lambda r: r.lease_expires_at or now,
            )[:limit]
            for row in expired:
                q = self._queues.get(row.queue)
                to = after_lease_expired(
                    attempt=row.attempt,
                    max_attempts=first_set(
                        row.max_attempts,  # the job's own, or its task's stamped at claim
                        q.policy.max_attempts if q else None,
                        default=default_max_attempts,
                    ),
                )
                assert row.lease_expires_at is not None
                row.last_error = lease_expired_error(
                    row.worker_id, self._workers.get(row.worker_id or ""), row.lease_expires_at
                )
                row.run_at = now
                row.lease_expires_at = None
                if to is State.DEAD:
                    row.finished_at = now
                self._move(row, to, worker_id=row.worker_id, error=row.last_error)
                reaped[row.queue] = reaped.get(row.queue, 0) + 1
            self._notify(r.queue for r in expired if r.state is State.RETRYING)
        return reaped

    def runnable_queues(self) -> list[str]:
        with self._lock:
            return sorted({r.queue for r in self._jobs.values() if r.state in RUNNABLE})

    def next_due_in(self, queues: Sequence[str]) -> float | None:
        with self._lock:
            wanted = set(queues)
            due = [
                r.run_at for r in self._jobs.values() if r.state in RUNNABLE and r.queue in wanted
            ]
            if not due:
                return None
            return (min(due) - self.clock.now()).total_seconds()

    def register_worker(
        self,
        worker_id: str,
        *,
        hostname: str,
        pid: int,
        queues: Sequence[str] | None,
        concurrency: int,
    ) -> None:
        with self._lock:
            self._workers[worker_id] = self.clock.now()

    def worker_heartbeat(self, worker_id: str) -> None:
        with self._lock:
            self._workers[worker_id] = self.clock.now()

    def deregister_worker(self, worker_id: str) -> None:
        with self._lock:
            self._workers.pop(worker_id, None)
            self._restart_required.pop(worker_id, None)

    def listener(self) -> MemoryListener:
        with self._lock:
            listener = MemoryListener(self)
            self._listeners.add(listener)
            return listener

    def close(self) -> None:
        pass

    # -- queue policies --------------------------------------------------------------------

    def _queue_row(self, name: str) -> _QueueRow:
        q = self._queues.get(name)
        if q is None:
            q = self._queues[name] = _QueueRow(
                policy=Queue(name), circuit=CircuitView(CircuitState.CLOSED, self.clock.now())
            )
        return q

    def _queue_event(self, q: _QueueRow, kind: str, **fields: Any) -> None:
        q.events.append(QueueEvent(kind=kind, at=self.clock.now(), **fields))

    def write_policies(
        self, policies: Sequence[Queue], *, worker_id: str, live_only: bool = False
    ) -> None:
        with self._lock:
            for policy in policies:
                q = self._queue_row(policy.name)
                old = q.policy
                new = live_update(old, policy) if live_only else policy
                q.policy = Queue(**{**_fields(new), "paused": None})
                if new.paused is not None and new.paused != q.paused:
                    self._set_paused(q, new.paused, worker_id)
                if q.policy != Queue(**{**_fields(old), "paused": None}):
                    self._queue_event(q, "policy", reason="policy written", worker_id=worker_id)

    def read_policies(self) -> dict[str, Queue]:
        with self._lock:
            return {
                name: Queue(**{**_fields(q.policy), "paused": q.paused})
                for name, q in self._queues.items()
            }

    def _set_paused(self, q: _QueueRow, paused: bool, by: str) -> None:
        q.paused = paused
        self._queue_event(q, "paused" if paused else "resumed", worker_id=by)
        if not paused:
            self._notify([q.policy.name])

    def set_paused(self, queue: str, paused: bool, *, by: str) -> bool:
        with self._lock:
            if not paused and queue not in self._queues:
                return False
            q = self._queue_row(queue)
            if q.paused == paused:
                return False
            self._set_paused(q, paused, by)
            return True

    def record_circuit_failures(
        self, queue: str, *, count: int, error: str, worker_id: str
    ) -> str | None:
        return self._move_circuit(queue, circuit_failed(count, error), worker_id)

    def record_probe_success(self, queue: str, *, worker_id: str) -> bool:
        return self._move_circuit(queue, probe_succeeded, worker_id) is not None

    def _move_circuit(self, queue: str, move: CircuitMove, worker_id: str) -> str | None:
        """Apply a _domain decision to a circuit (as PostgresBackend._move_circuit does)."""
        with self._lock:
            q = self._queues.get(queue)
            if q is None or q.policy.circuit is None:
                return None
            writes = circuit_writes(q.circuit, self.clock.now(), q.policy.circuit, move, worker_id)
            for write in writes:
                q.circuit = write.view
                if write.moved:
                    self._circuit_event(q, write.before, write.view, write.worker_id)
            last = writes[-1]
            return str(last.view.state) if last.moved else None

    def _circuit_event(
        self, q: _QueueRow, before: CircuitState, view: CircuitView, worker_id: str | None
    ) -> None:
        self._queue_event(
            q,
            "circuit",
            from_state=str(before),
            to_state=str(view.state),
            reason=view.reason,
            worker_id=worker_id,
        )
        if view.state is not CircuitState.OPEN:
            self._notify([q.policy.name])

    def advance_circuits(self) -> int:
        n = 0
        with self._lock:
            now = self.clock.now()
            for q in self._queues.values():
                c = q.policy.circuit
                if c is None or q.circuit.state is not CircuitState.OPEN:
                    continue
                moved = circuit_as_of(q.circuit, now, cooldown_s=c.cooldown)
                if moved.state is CircuitState.HALF_OPEN:
                    self._circuit_event(q, q.circuit.state, moved, None)
                    q.circuit = moved
                    n += 1
        return n

    def prune_finished(self, *, limit: int) -> int:
        with self._lock:
            now = self.clock.now()
            doomed = []
            for row in self._jobs.values():
                if row.finished_at is None or row.state in RUNNABLE:
                    continue
                q = self._queues.get(row.queue)
                keep_s = retention_s(row.state, q.policy.retention if q else None)
                if keep_s is not None and row.finished_at < now - timedelta(seconds=keep_s):
                    doomed.append(row)
            for row in sorted(doomed, key=lambda r: r.finished_at or now)[:limit]:
                del self._jobs[row.id]
                if row.idempotency_key is not None:
                    self._keys.pop((row.queue, row.idempotency_key), None)
            return min(len(doomed), limit)

    def list_queues(self) -> list[QueueInfo]:
        with self._lock:
            now = self.clock.now()
            names = sorted({r.queue for r in self._jobs.values()} | set(self._queues))
            notes = [n for changes in self._restart_required.values() for n in changes]
            out = []
            for name in names:
                counts: dict[str, int] = {}
                oldest: datetime | None = None
                for r in self._jobs.values():
                    if r.queue != name:
                        continue
                    counts[str(r.state)] = counts.get(str(r.state), 0) + 1
                    if r.state in RUNNABLE and r.run_at <= now:
                        oldest = r.run_at if oldest is None else min(oldest, r.run_at)
                q = self._queues.get(name)
                circuit = None
                if q is not None and q.policy.circuit is not None:
                    circuit = circuit_as_of(q.circuit, now, cooldown_s=q.policy.circuit.cooldown)
                out.append(
                    QueueInfo(
                        name=name,
                        counts=counts,
                        policy=None
                        if q is None
                        else Queue(**{**_fields(q.policy), "paused": q.paused}),
                        paused=bool(q and q.paused),
                        circuit_state=str(circuit.state) if circuit else "closed",
                        circuit_since=circuit.since if circuit else None,
                        circuit_reason=circuit.reason if circuit else None,
                        oldest_runnable_age_s=(now - oldest).total_seconds() if oldest else None,
                        restart_required=[n for n in notes if _mentions(n, name)],
                        events=list(reversed(q.events[-10:])) if q else [],
                    )
                )
            return out

    def report_restart_required(self, worker_id: str, changes: Sequence[str]) -> None:
        with self._lock:
            if changes and worker_id in self._workers:  # as the workers row it lives in
                self._restart_required[worker_id] = list(changes)
            else:
                self._restart_required.pop(worker_id, None)

    # -- inspect and replay ----------------------------------------------------------------

    def get_job(self, job_id: int) -> JobRecord | None:
        with self._lock:
            row = self._jobs.get(job_id)
            return None if row is None else self._record(row)

    def list_jobs(self, *, queue: str | None, state: str | None, limit: int) -> list[JobRecord]:
        with self._lock:
            rows = [
                r
                for r in sorted(self._jobs.values(), key=lambda r: r.id, reverse=True)
                if (queue is None or r.queue == queue) and (state is None or r.state == state)
            ]
            return [self._record(r) for r in rows[:limit]]

    def retry_job(self, job_id: int) -> JobRecord:
        return self._operator_move(job_id, State.QUEUED, "replay", "replayed by an operator")

    def cancel_job(self, job_id: int) -> JobRecord:
        return self._operator_move(job_id, State.CANCELLED, "cancel", "cancelled by an operator")

    def _operator_move(self, job_id: int, to: State, verb: str, why: str) -> JobRecord:
        with self._lock:
            row = self._jobs.get(job_id)
            if row is None:
                raise JobNotFound(f"no job with id {job_id}")
            froms = [s for s, tos in TRANSITIONS.items() if to in tos and s is not State.RUNNING]
            if row.state not in froms:
                raise InvalidTransition(
                    f"cannot {verb} job {job_id}: it is {row.state}; "
                    f"only {' or '.join(froms)} jobs can be"
                )
            now = self.clock.now()
            if to is State.QUEUED:
                row.attempt = 0
                row.run_at = now
                row.finished_at = None
            else:
                row.finished_at = now
            row.lease_expires_at = None
            self._move(row, to, error=why)
            self._notify([row.queue] if to is State.QUEUED else [])
            return self._record(row)

    # -- testing conveniences -----------------------------------------------------------------

    def jobs(self) -> list[JobRecord]:
        """Every job, oldest first."""
        with self._lock:
            return [self._record(r) for r in sorted(self._jobs.values(), key=lambda r: r.id)]

    def expire_lease(self, job_id: int) -> None:
        """Make a running job's lease run out now, as if its worker had died (for tests)."""
        with self._lock:
            row = self._jobs[job_id]
            if row.state is State.RUNNING:
                row.lease_expires_at = self.clock.now() - timedelta(microseconds=1)

    def next_run_at(self) -> datetime | None:
        """When the earliest runnable job may run, or None: its run_at, or later when its queue
        waits on an open circuit or a rate limit. Jobs of paused queues never count."""
        with self._lock:
            now = self.clock.now()
            due: list[datetime] = []
            for r in self._jobs.values():
                if r.state not in RUNNABLE:
                    continue
                q = self._queues.get(r.queue)
                if q is None:
                    due.append(r.run_at)
                elif not q.paused:
                    due.append(max(r.run_at, self._unblocked_at(q, now)))
            return min(due) if due else None

    def _unblocked_at(self, q: _QueueRow, now: datetime) -> datetime:
        """When a queue's circuit or rate lets it give jobs again (`now` if they do)."""
        policy = q.policy
        if policy.circuit is not None and q.circuit.state is CircuitState.OPEN:
            reopen = q.circuit.since + timedelta(seconds=policy.circuit.cooldown)
            if reopen > now:
                return reopen
        if policy.rate is not None and q.starts:
            used = sum(q.starts.values())
            if used >= policy.rate.limit:
                window = timedelta(seconds=policy.rate.per + rate_bucket_s(policy.rate))
                return min(q.starts) + window + timedelta(microseconds=1)
        return now


def _fields(policy: Queue) -> dict[str, Any]:
    return {name: getattr(policy, name) for name in Queue.__dataclass_fields__}


def _bucket(now: datetime, bucket_s: float) -> datetime:
    """The start of the rate bucket `now` falls in (as date_bin does it in SQL)."""
    epoch = datetime(1970, 1, 1, tzinfo=now.tzinfo)
    offset = (now - epoch).total_seconds()
    return epoch + timedelta(seconds=offset - offset % bucket_s)


def _mentions(change: str, queue: str) -> bool:
    return change.startswith((f"queues.{queue}.", f"queue {queue} "))


if TYPE_CHECKING:

    def _conforms(b: MemoryBackend) -> Backend:
        return b
