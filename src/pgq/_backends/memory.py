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

from pgq._clock import Clock
from pgq._domain import (
    DISCARDED,
    RUNNABLE,
    TRANSITIONS,
    GiveUp,
    Lease,
    Outcome,
    RetryIn,
    State,
    after_lease_expired,
    can_move,
)
from pgq._errors import InvalidTransition, JobNotFound
from pgq._records import ClaimedJob, Enqueued, JobEvent, JobRecord, NewJob
from pgq._runner import run_attempt
from pgq._tasks import Task, resolve_tasks

if TYPE_CHECKING:
    from pgq._ports import Backend


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


class MemoryListener:
    def __init__(self, backend: InMemoryBackend) -> None:
        self._backend = backend
        self.pending: set[str] = set()  # guarded by the backend's lock

    def wait(self, timeout_s: float) -> set[str]:
        with self._backend._wake:
            self._backend._wake.wait_for(lambda: bool(self.pending), timeout=timeout_s)
            got, self.pending = self.pending, set()
            return got

    def close(self) -> None:
        with self._backend._lock:
            self._backend._listeners.discard(self)


class InMemoryBackend:
    """A pgq backend held in memory, for tests: pass it wherever pgq takes a connection or DSN.

    `clock` plays the database's now(); by default it ticks with wall time and `clock.advance()`
    moves it ahead. Use `pgq.testing.FrozenClock()` for a clock that only moves when told.
    """

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock or Clock()
        # Guards every field below; held only for in-memory work, never while a task runs.
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._listeners: set[MemoryListener] = set()
        self._jobs: dict[int, _Row] = {}
        self._keys: dict[tuple[str, str], int] = {}
        self._workers: dict[str, datetime] = {}
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
                    error=f"late result discarded (the attempt had already ended): {what}",
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
            for queue, limit in wants:
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
                        )
                    )
        return claimed

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
                    error="released unstarted by worker shutdown",
                )
                n += 1
                released.add(row.queue)
            self._notify(released)
        return n

    def reap_expired(self, *, limit: int, default_max_attempts: int) -> int:
        n = 0
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
                to = after_lease_expired(
                    attempt=row.attempt, max_attempts=row.max_attempts or default_max_attempts
                )
                seen = self._workers.get(row.worker_id or "")
                row.last_error = (
                    f"lease expired: worker {row.worker_id or 'unknown'} last seen "
                    f"{_iso(seen) if seen else 'never (worker gone)'}, lease ran out at "
                    f"{_iso(row.lease_expires_at) if row.lease_expires_at else '?'}"
                )
                row.run_at = now
                row.lease_expires_at = None
                if to is State.DEAD:
                    row.finished_at = now
                self._move(row, to, worker_id=row.worker_id, error=row.last_error)
                n += 1
            self._notify(r.queue for r in expired if r.state is State.RETRYING)
        return n

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

    def listener(self) -> MemoryListener:
        with self._lock:
            listener = MemoryListener(self)
            self._listeners.add(listener)
            return listener

    def close(self) -> None:
        pass

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

    def run_until_empty(
        self, *, tasks: Iterable[str | Task[..., Any]], max_runs: int = 100_000
    ) -> int:
        """Run every job, retries included, to a terminal state, in this thread; return how
        many attempts ran. Instead of sleeping, the clock jumps to the next due job.

        A job whose task is not among `tasks` fails its attempts as a worker would fail them.
        """
        known = resolve_tasks(list(tasks))
        stamped = {n: t.max_attempts for n, t in known.items() if t.max_attempts is not None}
        worker_id = "in-memory"
        runs = 0
        while True:
            with self._lock:
                queues = sorted({r.queue for r in self._jobs.values() if r.state in RUNNABLE})
            claimed = self.claim(
                worker_id=worker_id,
                wants=[(q, 1) for q in queues],
                lease_s=3600.0,
                max_attempts=stamped,
            )
            if not claimed:
                due = self.next_run_at()
                if due is None:
                    return runs
                self.clock.advance_to(due)
                continue
            for job in claimed:
                runs += 1
                if runs > max_runs:
                    raise RuntimeError(f"run_until_empty ran {max_runs} attempts and jobs remain")
                failed = run_attempt(job, known)
                if failed is None:
                    self.complete_many([job.lease])
                else:
                    self.fail(job.lease, failed.outcome, error=failed.error)

    def next_run_at(self) -> datetime | None:
        """When the earliest runnable job is due, or None."""
        with self._lock:
            due = [r.run_at for r in self._jobs.values() if r.state in RUNNABLE]
            return min(due) if due else None


def _iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


if TYPE_CHECKING:

    def _conforms(b: InMemoryBackend) -> Backend:
        return b
