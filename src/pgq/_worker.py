"""The worker: claims jobs under leases, runs them on threads, writes results in batches.

Threads, each named:
- the caller's thread runs the claim loop (`run` / `run_until_empty`);
- `pgq-task-N` (concurrency of them) run task bodies, fed through a SimpleQueue (a Future per
  job cost more GIL time than the database round trips, see PERFORMANCE.md);
- `pgq-flusher` writes finished jobs: all completions gathered so far in one statement;
- `pgq-maintenance` extends leases every lease/3, runs the reaper, enforces task timeouts,
  refreshes the queue policies it reads from the database, records circuits whose cooldown
  passed, prunes finished jobs past their retention, and reloads the config file;
- `pgq-listener` waits on LISTEN and wakes the claim loop; polling is the fallback.

Fairness between queues: each claim asks every queue it serves for a share of the free slots
(a queue that filled its last share splits the free slots with the others that did; the rest
ask for one), and jobs from queues without a backlog skip ahead of a backlogged queue's jobs
waiting for a thread (the express lane), so a flood in one queue does not delay another's.

A slot is held from claim until the job's result is written, so `running` rows stay bounded by
`concurrency + prefetch`. Every database call in a loop that fails logs a warning, backs off and
tries again: a lost connection delays jobs, never drops them (a lease that runs out meanwhile is
taken back by a reaper, and this worker's late write is then discarded by the fence).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import itertools
import logging
import math
import os
import queue as queue_mod
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Final, TypeVar

from pgq._domain import (
    DEFAULT_MAX_ATTEMPTS,
    GiveUp,
    Lease,
    check_queue_name,
    check_schema_name,
)
from pgq._errors import ConfigError, DatabaseError
from pgq._policy import (
    Queue,
    live_update,
    load_config,
    merge_queues,
    rate_bucket_s,
    restart_required,
)
from pgq._ports import Backend, Listener
from pgq._records import ClaimedJob
from pgq._runner import Failed, counts_for_circuit, judge, prepare
from pgq._runner import call as call_task
from pgq._tasks import Task, resolve_tasks

logger = logging.getLogger("pgq.worker")

T = TypeVar("T")

_REAP_BATCH = 1000
_MAX_CLAIM = 100  # rows per claim statement: PERFORMANCE.md found the plateau at about 100
_MAX_PREFETCH = 400
_MAX_FLUSH = 500  # results per write: the fenced statements look attempts up by position
_BUFFER_S = 0.05
_POLICY_EVERY_S = 1.0  # policy cache refresh, circuit cooldowns, config file check
_PRUNE_EVERY_S = 10.0
_PRUNE_BATCH = 500
_PRUNE_ROUNDS = 20  # batches per prune run at most, so the maintenance thread moves on


@dataclass(slots=True)
class _Slot:
    """A claimed job from its claim until its result is written. The slot itself travels
    through the task queue and the result queue, so its lease is built once per job."""

    job: ClaimedJob
    lease: Lease
    task: Task[..., Any] | None = None
    timeout_s: float | None = None
    started_at: float | None = None  # time.monotonic() when its body started
    timed_out: bool = False
    lost: bool = False
    finished: bool = False  # its result is on the way to the database
    released: bool = False  # handed back unstarted at shutdown: no thread may start it


# In _todo: "a job waits in the express lane" (compared by identity).
_EXPRESS: Final = _Slot(ClaimedJob(0, "", "", None, 0, None, ""), Lease(0, 0, ""))


@dataclass(slots=True)
class _Stats:
    completed: int = 0
    failed: int = 0
    dead: int = 0
    discarded: int = 0
    claimed: int = 0


class Worker:
    """Runs jobs from PostgreSQL (or an in-memory backend) until stopped.

    Args:
        target: a DSN string, or a backend such as `pgq.testing.InMemoryBackend()`.
        tasks: modules (dotted names) whose `@pgq.task` functions this worker runs, or task
            objects. A job whose task is not among them fails its attempt, naming the task.
        queues: the queues to serve, as names or `pgq.Queue` policies; default None serves every
            queue (or, with `config`, the queues of the file).
        concurrency: task threads; default 10.
        lease: seconds a claim is held before the reaper may take it back; extended every
            lease/3 while the job runs; default 30.
        grace: seconds in-flight jobs get to finish after SIGTERM/SIGINT; default 30.
        poll_interval: seconds between claims when idle and no NOTIFY arrives; default 1.
        reaper_interval: seconds between reaper runs; default 5.
        prefetch: jobs claimed beyond `concurrency`, waiting their turn under a lease (released
            unstarted on shutdown). Default None adapts: enough for about 50 ms of work at the
            observed job duration, between `concurrency` and 400 (short jobs need a deep
            buffer to keep the threads busy; long jobs should not be hoarded from other
            workers). An integer fixes it.
        schema: the schema pgq's tables live in; default "pgq".
        connect_timeout: seconds to wait for the database at start; default 10.
        config: a `pgq.toml` with one `[queues.NAME]` table per queue (a queue in both the file
            and `queues` takes the file's table). Checked every second while the worker
            runs: max_attempts, backoff, rate, retention and paused apply at once; a change to
            concurrency, timeout, circuit or the set of queues is logged and reported by
            `pgq queues` as "restart required" and not applied; a file that does not validate
            changes nothing (the worker keeps its last good config and logs why).

    Raises:
        ConfigError: an option out of range, or a config file that does not validate (naming
        the key). TaskNotFound: a task module that does not import
        or defines no task (both at construction, before any connection is made).

    Example:
        >>> worker = pgq.Worker("postgresql:///app", tasks=["myapp.tasks"])  # doctest: +SKIP
        >>> worker.run()  # until SIGTERM / SIGINT  # doctest: +SKIP
    """

    def __init__(
        self,
        target: str | Backend,
        *,
        tasks: Iterable[str | Task[..., Any]] = (),
        queues: Sequence[str | Queue] | None = None,
        concurrency: int = 10,
        lease: float = 30.0,
        grace: float = 30.0,
        poll_interval: float = 1.0,
        reaper_interval: float = 5.0,
        prefetch: int | None = None,
        schema: str = "pgq",
        connect_timeout: float = 10.0,
        config: str | os.PathLike[str] | None = None,
    ) -> None:
        _positive("concurrency", concurrency, integer=True)
        _positive("lease", lease)
        _positive("poll_interval", poll_interval)
        _positive("reaper_interval", reaper_interval)
        _positive("connect_timeout", connect_timeout)
        if not grace >= 0:
            raise ConfigError(f"grace must be >= 0 seconds, got {grace!r}")
        if prefetch is not None and (not isinstance(prefetch, int) or prefetch < 0):
            raise ConfigError(f"prefetch must be an integer >= 0, got {prefetch!r}")
        self._config_path = Path(config) if config is not None else None
        self._declared = list(queues) if queues is not None else None
        try:
            check_schema_name(schema)
            for q in self._declared or ():
                if not isinstance(q, Queue):
                    check_queue_name(q)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if self._declared is not None and not self._declared:
            raise ConfigError("queues must name at least one queue, or be None for every queue")
        from_file = None
        self._config_mtime: float | None = None
        if self._config_path is not None:
            self._config_mtime = _mtime(self._config_path)
            from_file = load_config(self._config_path)
        names, owned = merge_queues(self._declared, from_file)
        self._target = target
        self.queues = names
        # The policies this worker declares (writes at start, and its live settings on reload).
        self.policies: dict[str, Queue] = owned
        self.concurrency = concurrency
        self.lease_s = float(lease)
        self.grace_s = float(grace)
        self.poll_interval_s = float(poll_interval)
        self.reaper_interval_s = float(reaper_interval)
        self.prefetch = prefetch
        self.schema = schema
        self.connect_timeout_s = float(connect_timeout)
        self.id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        # Imported now, so a module that does not import fails here, before any connection.
        self.tasks: dict[str, Task[..., Any]] = resolve_tasks(list(tasks))
        self.stats = _Stats()

        self._owns_backend = False
        self._stop = threading.Event()  # no more claims
        self._halt = threading.Event()  # helper threads exit
        self._wake = threading.Event()  # the claim loop should look again
        self._lock = threading.Lock()  # guards _slots and stats
        self._slots: dict[Lease, _Slot] = {}
        self._todo: queue_mod.SimpleQueue[_Slot | None] = queue_mod.SimpleQueue()
        # Results for the flusher; None only wakes it (at shutdown).
        self._done: queue_mod.SimpleQueue[tuple[_Slot, Failed | None] | None] = (
            queue_mod.SimpleQueue()
        )
        self._threads: list[threading.Thread] = []
        self._task_seq = itertools.count()
        self._listener: Listener | None = None
        self._known_queues: list[str] = list(self.queues or [])
        self._notified: set[str] = set()  # queues announced by NOTIFY since the last claim
        self._busy: set[str] = set()
        self._rotation = 0
        self._signals = 0
        self._task_max_attempts: dict[str, int] = {}
        self._avg_job_s = 1.0  # moving average of task body durations, for adaptive prefetch
        # Every queue's stored policy, refreshed each second by the maintenance thread (read
        # whole: an assignment swaps it). Retry settings and circuits follow these rows.
        self._stored: dict[str, Queue] = {}
        self._guarded: frozenset[str] = frozenset()  # queues with a cap, a rate or a circuit
        self._timeouts: dict[str, float] = {}  # queue timeouts, fixed at start (restart-only)
        self._rate_hot_until = 0.0  # time.monotonic(): a rated queue gave jobs lately
        self._rate_poll_s = math.inf  # idle wait while a rated queue is hot
        self._express: collections.deque[_Slot] = collections.deque()
        self._held_since: float | None = None  # burst mode: due jobs held back since

    # -- public ----------------------------------------------------------------------------

    def run(self) -> None:
        """Run until SIGTERM/SIGINT (or `stop()`): then stop claiming, let in-flight jobs finish
        for `grace` seconds, release the rest, and return. A second signal exits at once."""
        self._serve(burst=None)

    def run_until_empty(self, max_wait: float = 10.0) -> None:
        """Burst mode: return once nothing is in flight and no job of its queues becomes
        runnable within `max_wait` seconds (a retry due in 50 ms is waited for)."""
        if not max_wait >= 0:
            raise ConfigError(f"max_wait must be >= 0 seconds, got {max_wait!r}")
        self._serve(burst=float(max_wait))

    def stop(self) -> None:
        """Ask the worker to stop as SIGTERM does; returns at once (thread-safe)."""
        self._stop.set()
        self._wake.set()

    # -- lifecycle -------------------------------------------------------------------------

    def _open(self) -> Backend:
        if isinstance(self._target, str):
            from pgq._backends.postgres import PostgresBackend, check_database

            check_database(self._target, schema=self.schema, timeout_s=self.connect_timeout_s)
            self._owns_backend = True
            return PostgresBackend.pooled(
                self._target, schema=self.schema, size=4, connect_timeout=self.connect_timeout_s
            )
        return self._target

    def _serve(self, *, burst: float | None) -> None:
        backend = self._open()
        self._task_max_attempts = {
            name: t.max_attempts for name, t in self.tasks.items() if t.max_attempts is not None
        }
        restore = self._install_signals()
        try:
            self._retry_forever(
                "register worker",
                lambda: backend.register_worker(
                    self.id,
                    hostname=socket.gethostname(),
                    pid=os.getpid(),
                    queues=self.queues,
                    concurrency=self.concurrency,
                ),
            )
            logger.info(
                "worker started",
                extra={
                    "worker_id": self.id,
                    "queues": self.queues or "all",
                    "concurrency": self.concurrency,
                    "tasks": sorted(self.tasks),
                },
            )
            if self.policies:
                self._retry_forever(
                    "write queue policies",
                    lambda: backend.write_policies(list(self.policies.values()), worker_id=self.id),
                )
            self._retry_forever("read queue policies", lambda: self._refresh_policies(backend))
            self._timeouts = {
                name: p.timeout
                for name, p in (self._stored | self.policies).items()
                if p.timeout is not None
            }
            self._start_threads(backend)
            self._claim_loop(backend, burst)
            self._shutdown(backend)
        finally:
            restore()
            self._halt.set()
            self._done.put(None)
            # The listener thread closes its own connection when it sees _halt (closing it from
            # here would race its wait); nothing it does matters any more, so no join.
            for thread in self._threads:
                if thread.name != "pgq-listener":
                    thread.join(timeout=self.poll_interval_s + 1.0)
            with contextlib.suppress(DatabaseError):
                backend.deregister_worker(self.id)
            if self._owns_backend:
                backend.close()
            logger.info(
                "worker stopped",
                extra={
                    "worker_id": self.id,
                    "completed": self.stats.completed,
                    "failed": self.stats.failed,
                },
            )

    def _start_threads(self, backend: Backend) -> None:
        for _ in range(self.concurrency):
            self._spawn_task_thread()
        self._listener = backend.listener()
        for name, target in (
            ("pgq-flusher", self._flush_loop),
            ("pgq-maintenance", self._maintenance_loop),
            ("pgq-listener", self._listen_loop),
        ):
            thread = threading.Thread(target=target, args=(backend,), name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def _spawn_task_thread(self) -> None:
        thread = threading.Thread(
            target=self._task_loop, name=f"pgq-task-{next(self._task_seq)}", daemon=True
        )
        thread.start()

    def _install_signals(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def on_signal(signum: int, frame: FrameType | None) -> None:
            self._signals += 1
            if self._signals > 1:
                logger.warning("second signal: exiting at once", extra={"worker_id": self.id})
                os._exit(1)
            logger.info(
                "signal received: stopping",
                extra={"worker_id": self.id, "signal": signal.Signals(signum).name},
            )
            self.stop()

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}

        def restore() -> None:
            for s, handler in previous.items():
                signal.signal(s, handler)

        return restore

    # -- claiming --------------------------------------------------------------------------

    @property
    def _capacity(self) -> int:
        """Jobs this worker may hold (running, waiting for a thread, or being written)."""
        if self.prefetch is not None:
            return self.concurrency + self.prefetch
        # Adaptive prefetch: about _BUFFER_S of work at the observed job duration.
        wanted = self.concurrency * _BUFFER_S / max(self._avg_job_s, 1e-6)
        return self.concurrency + int(min(_MAX_PREFETCH, max(self.concurrency, wanted)))

    def _claim_loop(self, backend: Backend, burst: float | None) -> None:
        refreshed_at = -math.inf
        failures = 0
        while not self._stop.is_set():
            self._wake.clear()
            with self._lock:
                free = self._capacity - len(self._slots)
                in_flight = len(self._slots)
            more = False
            # Claim in batches of up to _MAX_CLAIM while a quarter of the capacity is free (or
            # the threads ran dry), so claims and completions overlap instead of taking turns.
            free = min(free, _MAX_CLAIM)
            if free >= max(1, min(self._capacity // 4, 25)) or (
                free > 0 and self._todo.qsize() == 0
            ):
                try:
                    if self.queues is None:
                        with self._lock:
                            notified, self._notified = self._notified, set()
                        if time.monotonic() - refreshed_at > self.poll_interval_s:
                            self._known_queues = backend.runnable_queues()
                            refreshed_at = time.monotonic()
                        self._known_queues += sorted(notified - set(self._known_queues))
                    more = self._claim(backend, free)
                    failures = 0
                except DatabaseError as exc:
                    failures += 1
                    self._stop.wait(self._retry_delay("claim", exc, failures))
                    continue
            if more:
                continue
            if burst is not None and in_flight == 0:
                wait_s = self._burst_wait(backend, burst)
                if wait_s is None:
                    return
                self._wake.wait(min(wait_s, self.poll_interval_s))
                continue
            idle_s = self.poll_interval_s
            if time.monotonic() < self._rate_hot_until:
                idle_s = min(idle_s, self._rate_poll_s)  # a rate window may reopen sooner
            self._wake.wait(idle_s)

    def _burst_wait(self, backend: Backend, max_wait: float) -> float | None:
        """In burst mode, how long to wait for the next due job; None to stop now."""
        with self._lock:
            if self._slots:
                return self.poll_interval_s
        queues = self.queues if self.queues is not None else backend.runnable_queues()
        stored = self._stored
        queues = [q for q in queues if not ((p := stored.get(q)) is not None and p.paused)]
        if not queues:  # a paused queue's jobs are not runnable: burst mode leaves them
            return None
        due = self._retry_forever("look for due jobs", lambda: backend.next_due_in(queues))
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
        return min(self.poll_interval_s, max(0.01, self._rate_poll_s))

    def _claim(self, backend: Backend, free: int) -> bool:
        """Claim up to `free` jobs over the queues served; True if some queue may hold more."""
        queues = self._known_queues
        if not queues:
            return False
        n = len(queues)
        start = self._rotation % n
        self._rotation += 1
        ordered = queues[start:] + queues[:start]
        busy = [q for q in ordered if q in self._busy]
        wants: list[tuple[str, int]]
        if busy:
            share = max(1, math.ceil(free / len(busy)))
            wants = [(q, share if q in self._busy else 1) for q in ordered]
        else:
            share = max(1, math.ceil(free / n))
            wants = [(q, share) for q in ordered]
        guarded, stored = self._guarded, self._stored
        jobs = backend.claim(
            worker_id=self.id,
            wants=wants,
            lease_s=self.lease_s,
            max_attempts=self._task_max_attempts,
            guarded=[q for q in ordered if q in guarded] if guarded else (),
            plain=not any(q in stored for q in ordered),
        )
        got: dict[str, int] = {}
        for job in jobs:
            got[job.queue] = got.get(job.queue, 0) + 1
        self._busy = {q for q, want in wants if got.get(q, 0) >= want}
        if jobs:
            self._held_since = None
            tasks, timeouts = self.tasks, self._timeouts
            slots = []
            for job in jobs:
                task = tasks.get(job.task)
                timeout_s = task.timeout if task is not None else None
                slots.append(_Slot(job, job.lease, task, timeout_s or timeouts.get(job.queue)))
            with self._lock:
                for slot in slots:
                    self._slots[slot.lease] = slot
                self.stats.claimed += len(jobs)
            if len(got) == 1 and self._busy:
                for slot in slots:  # one backlogged queue: the plain lane, in claim order
                    self._todo.put(slot)
            else:
                self._dispatch(slots, got, dict(wants))
            if self._rate_poll_s < math.inf and any(
                (p := self._stored.get(q)) is not None and p.rate is not None for q in got
            ):
                self._rate_hot_until = time.monotonic() + self._rate_poll_s * 25
        return bool(self._busy)

    def _dispatch(self, slots: list[_Slot], got: dict[str, int], wants: dict[str, int]) -> None:
        """Hand jobs to the task threads: those of queues that gave less than their share (no
        backlog) go through the express lane, ahead of backlogged queues' jobs already
        waiting, so that a flood in one queue does not delay another's."""
        express = self._express
        for slot in slots:
            queue = slot.job.queue
            n = got[queue]
            if n < wants[queue] or n == 1:
                express.append(slot)
                self._todo.put(_EXPRESS)  # wakes an idle thread; busy ones look first anyway
            else:
                self._todo.put(slot)

    # -- running ---------------------------------------------------------------------------

    def _task_loop(self) -> None:
        express = self._express
        while True:
            try:
                slot = express.popleft()
            except IndexError:
                item = self._todo.get()
                if item is None:
                    return
                if item is _EXPRESS:
                    continue
                slot = item
            job = slot.job
            with self._lock:
                if slot.released or slot.lost or self._halt.is_set():
                    continue
                slot.started_at = time.monotonic()
            prepared = prepare(job, self.tasks, self._stored)
            if isinstance(prepared, Failed):
                self._done.put((slot, prepared))
                continue
            task, kwargs = prepared
            started = slot.started_at
            try:
                call_task(task, kwargs)
                result: Failed | None = None
            except Exception as exc:
                result = judge(job, task, exc, self._stored.get(job.queue))
            # Unlocked read-modify-write: a lost update only blurs an average.
            self._avg_job_s += 0.05 * ((time.monotonic() - started) - self._avg_job_s)
            with self._lock:
                abandoned = slot.timed_out
                slot.finished = True
            self._done.put((slot, result))
            if abandoned:
                return  # a replacement thread took this one's place when it timed out

    def _flush_loop(self, backend: Backend) -> None:
        failures = 0
        pending: list[tuple[_Slot, Failed | None]] = []
        while not (self._halt.is_set() and not pending and self._done.empty()):
            if not pending:
                try:
                    item = self._done.get(timeout=0.2)
                except queue_mod.Empty:
                    continue
                if item is None:  # shutdown's wake-up call
                    continue
                pending.append(item)
            with contextlib.suppress(queue_mod.Empty):
                while len(pending) < _MAX_FLUSH:
                    item = self._done.get_nowait()
                    if item is not None:
                        pending.append(item)
            try:
                self._write_results(backend, pending)
                pending = []
                failures = 0
            except DatabaseError as exc:
                failures += 1
                time.sleep(self._retry_delay("writing results", exc, failures))

    def _write_results(self, backend: Backend, results: list[tuple[_Slot, Failed | None]]) -> None:
        # Failures first: when a timed-out attempt's failure and its body's late success meet
        # in one batch, the failure stands and the late success is fenced off (discarded).
        lost: list[Lease] = []
        failed_written = dead = 0
        for slot, failed in results:
            if failed is None:
                continue
            job, lease = slot.job, slot.lease
            if not backend.fail(lease, failed.outcome, error=failed.error):
                lost.append(lease)
                continue
            failed_written += 1
            if isinstance(failed.outcome, GiveUp):
                dead += 1
                logger.warning(
                    "job dead",
                    extra={
                        "job_id": job.id,
                        "task": job.task,
                        "queue": job.queue,
                        "attempt": job.attempt,
                        "error": failed.outcome.reason,
                    },
                )
        successes = [slot.lease for slot, failed in results if not failed]
        held = backend.complete_many(successes) if successes else set()
        lost.extend(lease for lease in successes if lease not in held)
        # Its own errors stay its own: the results above are written, and writing them again
        # would find their leases gone and record them as discarded.
        self._safely("circuit update", lambda: self._feed_circuits(backend, results, held))
        for lease in lost:
            logger.warning(
                "late result discarded",
                extra={"job_id": lease.job_id, "attempt": lease.attempt, "worker_id": self.id},
            )
        with self._lock:
            for slot, _ in results:
                self._slots.pop(slot.lease, None)
            self.stats.completed += len(held)
            self.stats.failed += failed_written
            self.stats.dead += dead
            self.stats.discarded += len(lost)
        self._wake.set()

    def _feed_circuits(
        self,
        backend: Backend,
        results: list[tuple[_Slot, Failed | None]],
        completed: set[Lease],
    ) -> None:
        """Count this batch's failures toward their queues' circuits; close half-open
        circuits whose probes succeeded. Only queues with a circuit cost a statement."""
        stored = self._stored
        failures: dict[str, tuple[int, str]] = {}
        probes: set[str] = set()
        for slot, failed in results:
            job = slot.job
            policy = stored.get(job.queue)
            if policy is None or policy.circuit is None:
                continue
            own = self.policies.get(job.queue)
            if own is not None and own.circuit is not None:
                policy = own  # its own `on` (exception classes, not names) decides
            if failed is None:
                if job.probe and slot.lease in completed:
                    probes.add(job.queue)
            elif counts_for_circuit(failed, policy):
                n, _ = failures.get(job.queue, (0, ""))
                failures[job.queue] = (n + 1, failed.error)
        for queue in probes:
            if backend.record_probe_success(queue, worker_id=self.id):
                logger.info("circuit closed", extra={"queue": queue, "worker_id": self.id})
        for queue, (n, error) in failures.items():
            self._count_failures(backend, queue, n, error)

    def _count_failures(self, backend: Backend, queue: str, n: int, error: str) -> None:
        moved = backend.record_circuit_failures(queue, count=n, error=error, worker_id=self.id)
        if moved == "open":
            logger.warning(
                "circuit opened", extra={"queue": queue, "worker_id": self.id, "error": error}
            )

    # -- maintenance: heartbeat, reaper, timeouts ----------------------------------------------

    def _maintenance_loop(self, backend: Backend) -> None:
        heartbeat_every = self.lease_s / 3
        next_heartbeat = time.monotonic() + heartbeat_every
        next_reap = next_policy = time.monotonic()
        next_prune = time.monotonic() + 1.0
        tick = min(0.25, heartbeat_every)
        while not self._halt.wait(tick):
            now = time.monotonic()
            self._enforce_timeouts(now)
            if now >= next_heartbeat:
                ok = self._safely("heartbeat", lambda: self._heartbeat(backend))
                next_heartbeat = now + (heartbeat_every if ok else min(heartbeat_every, 1.0))
            if now >= next_reap:
                self._safely("reaper", lambda: self._reap(backend))
                next_reap = now + self.reaper_interval_s
            if now >= next_policy:
                self._reload(backend)
                self._safely("circuits", lambda: self._advance_circuits(backend))
                self._safely("policies", lambda: self._refresh_policies(backend))
                next_policy = now + _POLICY_EVERY_S
            if now >= next_prune:
                self._safely("retention", lambda: self._prune(backend))
                next_prune = time.monotonic() + _PRUNE_EVERY_S

    def _refresh_policies(self, backend: Backend) -> None:
        stored = backend.read_policies()
        self._stored = stored
        self._guarded = frozenset(
            name
            for name, p in stored.items()
            if p.concurrency is not None or p.rate is not None or p.circuit is not None
        )
        rated = [
            rate_bucket_s(p.rate)
            for name, p in stored.items()
            if p.rate is not None and (self.queues is None or name in self.queues)
        ]
        self._rate_poll_s = max(0.005, min(rated)) if rated else math.inf

    def _advance_circuits(self, backend: Backend) -> None:
        has_circuits = any(p.circuit is not None for p in self._stored.values())
        if has_circuits and backend.advance_circuits():
            logger.info("circuit half-open: sending probes", extra={"worker_id": self.id})

    def _prune(self, backend: Backend) -> None:
        total = 0
        for _ in range(_PRUNE_ROUNDS):
            n = backend.prune_finished(limit=_PRUNE_BATCH)
            total += n
            if n == 0 or self._halt.is_set():
                break
        if total:
            logger.info("pruned finished jobs", extra={"worker_id": self.id, "jobs": total})

    def _reload(self, backend: Backend) -> None:
        """Apply a changed config file's live settings; report what needs a restart."""
        path = self._config_path
        if path is None:
            return
        mtime = _mtime(path)
        if mtime == self._config_mtime:
            return
        self._config_mtime = mtime
        try:
            _, fresh = merge_queues(self._declared, load_config(path))
        except ConfigError as exc:
            logger.warning(
                "config refused; keeping the last good one",
                extra={"worker_id": self.id, "error": str(exc)},
            )
            return
        old = self.policies
        changes = restart_required(old, fresh)
        live: dict[str, Queue] = {}
        for name in old.keys() & fresh.keys():
            updated = live_update(old[name], fresh[name])
            if updated != old[name]:
                live[name] = updated
        if live:
            # `paused` is written only when the file changed it, so that a reload does not
            # undo a `pgq queues pause/resume` the file says nothing new about.
            written = [
                p if p.paused != old[p.name].paused else dataclasses.replace(p, paused=None)
                for p in live.values()
            ]
            applied = self._safely(
                "write reloaded policies",
                lambda: backend.write_policies(written, worker_id=self.id, live_only=True),
            )
            if not applied:
                self._config_mtime = None  # try again at the next check
                return
            self.policies = {**old, **live}
            logger.info(
                "config reloaded",
                extra={"worker_id": self.id, "queues": sorted(live), "file": str(path)},
            )
        for change in changes:
            logger.warning(f"restart required: {change}", extra={"worker_id": self.id})
        self._safely(
            "report restart required",
            lambda: backend.report_restart_required(self.id, changes),
        )

    def _heartbeat(self, backend: Backend) -> None:
        with self._lock:
            leases = [
                lease for lease, slot in self._slots.items() if not (slot.lost or slot.finished)
            ]
        backend.worker_heartbeat(self.id)
        if not leases:
            return
        held = backend.extend_leases(leases, lease_s=self.lease_s)
        missing = [lease for lease in leases if lease not in held]
        lost: list[Lease] = []
        if missing:
            with self._lock:
                for lease in missing:
                    slot = self._slots.get(lease)
                    if slot is None or slot.finished:
                        continue  # its result was written meanwhile: not lost
                    slot.lost = True
                    lost.append(lease)
                    if slot.started_at is None:
                        self._slots.pop(lease, None)  # never started: nothing to wait for
        if lost:
            for lease in lost:
                logger.warning(
                    "lease lost",
                    extra={"job_id": lease.job_id, "attempt": lease.attempt, "worker_id": self.id},
                )
            self._wake.set()

    def _reap(self, backend: Backend) -> None:
        reaped = backend.reap_expired(limit=_REAP_BATCH, default_max_attempts=DEFAULT_MAX_ATTEMPTS)
        if not reaped:
            return
        logger.info(
            "reaper took back expired leases",
            extra={"worker_id": self.id, "jobs": sum(reaped.values())},
        )
        for queue, n in reaped.items():
            policy = self._stored.get(queue)
            if policy is not None and policy.circuit is not None and policy.circuit.counts(None):
                self._count_failures(backend, queue, n, "lease lost to the reaper")

    def _enforce_timeouts(self, now: float) -> None:
        expired: list[tuple[_Slot, float]] = []
        with self._lock:
            for slot in self._slots.values():
                if (
                    slot.timeout_s is not None
                    and slot.started_at is not None
                    and not slot.timed_out
                    and now - slot.started_at > slot.timeout_s
                ):
                    slot.timed_out = True
                    expired.append((slot, slot.timeout_s))
        for slot, timeout_s in expired:
            error = TimeoutError(f"task {slot.job.task} ran past its timeout of {timeout_s}s")
            policy = self._stored.get(slot.job.queue)
            self._done.put((slot, judge(slot.job, slot.task, error, policy)))
            self._spawn_task_thread()  # the stuck thread keeps running; keep concurrency whole

    def _listen_loop(self, backend: Backend) -> None:
        listener = self._listener
        assert listener is not None
        try:
            while not self._halt.is_set():
                try:
                    # Short waits, so that the thread notices shutdown promptly.
                    queues = listener.wait(min(self.poll_interval_s, 0.1))
                except Exception as exc:
                    logger.warning("listener failed", extra={"error": str(exc)})
                    self._halt.wait(1.0)
                    continue
                if queues:
                    with self._lock:
                        self._notified |= queues
                    self._wake.set()
        finally:
            listener.close()

    # -- shutdown --------------------------------------------------------------------------

    def _shutdown(self, backend: Backend) -> None:
        # 1. Jobs claimed but never started go back to the queue at once.
        unstarted: list[Lease] = []
        with self._lock:
            for lease, slot in list(self._slots.items()):
                if slot.started_at is None:
                    unstarted.append(lease)
                    slot.released = True
                    del self._slots[lease]
        # Task threads skip released slots; one None per thread ends its loop.
        deadline = time.monotonic() + self.grace_s
        if unstarted:
            try:
                n = self._retry_until(
                    deadline, "release unstarted jobs", lambda: backend.release(unstarted)
                )
                logger.info("released unstarted jobs", extra={"worker_id": self.id, "jobs": n})
            except _GaveUp:  # the database stayed away: their leases run out, the reaper rescues
                logger.warning(
                    "could not release unstarted jobs before the grace period ended",
                    extra={"worker_id": self.id, "jobs": len(unstarted)},
                )
        # 2. Wait for in-flight jobs, up to the grace period.
        while time.monotonic() < deadline:
            with self._lock:
                if not self._slots:
                    break
            self._wake.wait(0.05)
            self._wake.clear()
        # 3. Whatever still runs has its attempt failed with the reason, and is retried.
        with self._lock:
            left = [s for s in self._slots.values() if not s.timed_out]
            for slot in left:
                slot.timed_out = True
        for slot in left:
            error = InterruptedError(
                f"worker {self.id} shut down after a grace period of {self.grace_s}s "
                "while the job was still running"
            )
            policy = self._stored.get(slot.job.queue)
            self._done.put((slot, judge(slot.job, slot.task, error, policy, counts=False)))
        for _ in range(self.concurrency):
            self._todo.put(None)
        # 4. Let the flusher write everything, then stop it.
        deadline = time.monotonic() + max(self.connect_timeout_s, 5.0)
        while time.monotonic() < deadline:
            with self._lock:
                if not self._slots and self._done.empty():
                    break
            time.sleep(0.01)

    # -- helpers ---------------------------------------------------------------------------

    def _safely(self, what: str, fn: Callable[[], None]) -> bool:
        try:
            fn()
        except DatabaseError as exc:
            logger.warning(
                f"{what} failed; will retry", extra={"worker_id": self.id, "error": str(exc)}
            )
            return False
        return True

    def _retry_delay(self, what: str, exc: DatabaseError, failures: int) -> float:
        """Log a failed database call and return how long to back off before the next try."""
        delay = _backoff_s(failures)
        logger.warning(
            f"{what} failed; retrying",
            extra={"worker_id": self.id, "error": str(exc), "retry_in_s": delay},
        )
        return delay

    def _retry_until(self, deadline: float, what: str, fn: Callable[[], T]) -> T:
        """Call `fn`, retrying database errors with backoff; _GaveUp once `deadline` (a
        time.monotonic() value) has passed."""
        failures = 0
        while True:
            try:
                return fn()
            except DatabaseError as exc:
                failures += 1
                if time.monotonic() >= deadline:
                    raise _GaveUp(what) from exc
                delay = self._retry_delay(what, exc, failures)
                time.sleep(min(delay, max(0.0, deadline - time.monotonic())))

    def _retry_forever(self, what: str, fn: Callable[[], T]) -> T:
        return self._retry_until(math.inf, what, fn)


class _GaveUp(Exception):
    """A database call kept failing until its deadline."""


def _backoff_s(failures: int) -> float:
    """Reconnect pacing: 0.1 s doubling to 10 s."""
    return float(min(10.0, 0.1 * 2.0 ** min(failures - 1, 10)))


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _positive(name: str, value: object, *, integer: bool = False) -> None:
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok or not value > 0:  # type: ignore[operator]  # checked
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{name} must be {kind} > 0, got {value!r}")
