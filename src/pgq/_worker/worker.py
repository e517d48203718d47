"""The worker: its options, and one run's lifecycle (start, signals, shutdown).

A run wires the parts (each in a module of its own under `pgq._worker`) and owns their threads:
- the caller's thread runs the claim loop (`claimer.Claimer`);
- `pgq-task-N` (concurrency of them) run task bodies (`executor.ThreadExecutor`);
- `pgq-flusher` writes finished jobs in batches and feeds the circuits (`results`);
- `pgq-maintenance` runs the periodic duties one after another (`maintenance/`: timeouts,
  heartbeat, reaper, config reload, circuits, policy refresh, retention);
- `pgq-listener` waits on LISTEN and wakes the claim loop (`listener`); polling is the fallback.

Every part reports what happened to jobs through one `events.Hooks`. Every run builds its parts
afresh, so a Worker runs again after it returned; when `run` or `run_until_empty` returns,
every thread it started has ended (but a task thread still inside a body that ran past its
timeout: Python cannot stop a thread, so it is left to finish, its result discarded).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from pgq._backends.ports import Backend, Listener
from pgq._backends.targets import worker_backend
from pgq._core.domain import check_queue_name, check_schema_name
from pgq._core.errors import ConfigError, DatabaseError
from pgq._core.policy import Queue, load_config, merge_queues
from pgq._core.tasks import Task, resolve_tasks
from pgq._worker.claimer import Claimer
from pgq._worker.events import Hooks
from pgq._worker.executor import ThreadExecutor
from pgq._worker.listener import listen_loop
from pgq._worker.maintenance import Duty, maintain
from pgq._worker.maintenance.circuits import CircuitAdvancer
from pgq._worker.maintenance.heartbeat import Heartbeat
from pgq._worker.maintenance.policies import PolicyRefresh
from pgq._worker.maintenance.pruner import Pruner
from pgq._worker.maintenance.reaper import Reaper
from pgq._worker.maintenance.reloader import Reloader, mtime
from pgq._worker.maintenance.timeouts import Timeouts
from pgq._worker.policies import QueuePolicies
from pgq._worker.results import Flusher, ResultWriter, Stats
from pgq._worker.retrying import GaveUp, retry_forever, retry_until
from pgq._worker.slots import Slots

logger = logging.getLogger("pgq.worker")


class Worker:
    """Runs jobs from PostgreSQL (or an in-memory backend) until stopped.

    Args:
        target: a DSN string, or a backend such as `pgq.testing.InMemoryBackend()`.
        tasks: modules (dotted names) whose `@pgq.task` functions this worker runs, or task
            objects. A job whose task is not among them fails its attempt, naming the task.
        queues: the queues to serve, as names or `pgq.Queue` policies; default None serves every
            queue (with `config` too: the file declares policies, not which queues are served).
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
        config: a `pgq.toml` with one `[queues.NAME]` table per queue; the worker writes the
            tables of the queues it serves (a queue in both the file and `queues` takes the
            file's table). Checked every second while the worker runs: max_attempts, backoff,
            rate, retention and paused apply at once; a change to concurrency, timeout, circuit
            or the set of queues is logged and reported by `pgq queues` as "restart required"
            and not applied; a file that does not validate changes nothing (the worker keeps
            its last good config and logs why).

    A Worker may be run again after `run` or `run_until_empty` returned; it keeps its id and
    its `stats` add up over the runs.

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
            self._config_mtime = mtime(self._config_path)
            from_file = load_config(self._config_path)
        names, owned = merge_queues(self._declared, from_file)
        self._target = target
        self.queues = names
        # The policies this worker declares (written at start, live settings on reload) and
        # the stored ones: kept across runs, so a reload applied in one run holds in the next.
        self._policies = QueuePolicies(owned, names)
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
        self.stats = Stats()
        # What happened to jobs: the log subscribes; metrics and traces will (internal API).
        self._hooks = Hooks()
        self._stop = threading.Event()  # no more claims; cleared when a run returns
        self._run_lock = threading.Lock()  # one run at a time
        self._wake: Callable[[], None] = lambda: None  # wakes the current run's claim loop
        self._signals = 0

    # -- public ----------------------------------------------------------------------------

    @property
    def policies(self) -> dict[str, Queue]:
        """The queue policies this worker declares, as its last good config has them."""
        return self._policies.own

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
        """Ask the worker to stop as SIGTERM does; returns at once (thread-safe). A stop asked
        before a run starts ends that run at once."""
        self._stop.set()
        self._wake()

    # -- one run ---------------------------------------------------------------------------

    def _serve(self, *, burst: float | None) -> None:
        if not self._run_lock.acquire(blocking=False):
            raise RuntimeError("this Worker is running already: one run at a time")
        try:
            backend, owned = worker_backend(
                self._target, schema=self.schema, connect_timeout_s=self.connect_timeout_s
            )
            try:
                _Run(self, backend).serve(burst)
            finally:
                if owned:
                    backend.close()
        finally:
            self._stop.clear()
            self._signals = 0
            self._run_lock.release()

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


class _Run:
    """One run of a Worker: its parts and their threads, built afresh each time."""

    def __init__(self, worker: Worker, backend: Backend) -> None:
        self.w = worker
        self.backend = backend
        wid = worker.id
        self.halt = threading.Event()  # helper threads exit
        self.deaf = threading.Event()  # the listener exits: set as soon as claiming ends
        self.slots = Slots()
        self.policies = worker._policies
        hooks = worker._hooks
        self.writer = ResultWriter(
            backend,
            worker_id=wid,
            policies=self.policies,
            hooks=hooks,
        )
        self.flusher = Flusher(
            self.writer, self.slots, worker.stats, worker_id=wid, on_written=self._wake
        )
        self.executor = ThreadExecutor(
            concurrency=worker.concurrency,
            tasks=worker.tasks,
            policies=self.policies,
            slots=self.slots,
            sink=self.flusher.put,
        )
        self.claimer = Claimer(
            backend,
            worker_id=wid,
            queues=worker.queues,
            lease_s=worker.lease_s,
            poll_interval_s=worker.poll_interval_s,
            prefetch=worker.prefetch,
            tasks=worker.tasks,
            slots=self.slots,
            executor=self.executor,
            policies=self.policies,
            stats=worker.stats,
            hooks=hooks,
        )
        self.threads: list[threading.Thread] = []
        self.listener: Listener | None = None

    def _wake(self) -> None:
        self.claimer.wake.set()

    def _deafen(self) -> None:
        self.deaf.set()
        if self.listener is not None:
            self.listener.interrupt()

    def _duties(self) -> list[Duty]:
        w, backend, hooks, policies = self.w, self.backend, self.w._hooks, self.policies
        duties: list[Duty] = [
            Timeouts(self.executor),
            Heartbeat(
                backend,
                self.slots,
                hooks,
                worker_id=w.id,
                lease_s=w.lease_s,
                on_lost=self._wake,
            ),
            Reaper(
                backend, policies, self.writer, hooks, worker_id=w.id, every_s=w.reaper_interval_s
            ),
        ]
        if w._config_path is not None:
            duties.append(
                Reloader(
                    backend,
                    policies,
                    hooks,
                    path=w._config_path,
                    declared=w._declared,
                    loaded_mtime=w._config_mtime,
                    worker_id=w.id,
                )
            )
        duties += [
            CircuitAdvancer(backend, policies, hooks, worker_id=w.id),
            PolicyRefresh(backend, policies),
            Pruner(backend, hooks, self.halt, worker_id=w.id),
        ]
        return duties

    def _start(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def serve(self, burst: float | None) -> None:
        w, backend = self.w, self.backend
        restore = w._install_signals()
        w._wake = self._wake
        started = False
        try:
            retry_forever(
                "register worker",
                w.id,
                lambda: backend.register_worker(
                    w.id,
                    hostname=socket.gethostname(),
                    pid=os.getpid(),
                    queues=w.queues,
                    concurrency=w.concurrency,
                ),
            )
            logger.info(
                "worker started",
                extra={
                    "worker_id": w.id,
                    "queues": w.queues or "all",
                    "concurrency": w.concurrency,
                    "tasks": sorted(w.tasks),
                },
            )
            if self.policies.own:
                own = list(self.policies.own.values())
                retry_forever(
                    "write queue policies",
                    w.id,
                    lambda: backend.write_policies(own, worker_id=w.id),
                )
            retry_forever("read queue policies", w.id, lambda: self.policies.refresh(backend))
            self.policies.fix_timeouts()
            self.executor.start()
            started = True
            listener = self.listener = backend.listener()
            self._start("pgq-flusher", lambda: self.flusher.loop(self.halt))
            self._start(
                "pgq-maintenance",
                lambda: maintain(self._duties(), self.halt, worker_id=w.id),
            )
            self._start(
                "pgq-listener", lambda: listen_loop(listener, self.deaf, self.claimer.notified)
            )
            self.claimer.loop(w._stop, burst)
            self._shutdown()
        finally:
            restore()
            w._wake = lambda: None
            self._end(started)

    def _shutdown(self) -> None:
        w = self.w
        self.claimer.close()  # no claim on notify either, before the unstarted are released
        self._deafen()  # nothing claims any more: the listener closes while the rest ends
        # 1. Jobs claimed but never started go back to the queue at once.
        unstarted = self.slots.release_waiting()
        deadline = time.monotonic() + w.grace_s
        if unstarted:
            try:
                n = retry_until(
                    deadline,
                    "release unstarted jobs",
                    w.id,
                    lambda: self.backend.release(unstarted),
                )
                logger.info("released unstarted jobs", extra={"worker_id": w.id, "jobs": n})
            except GaveUp:  # the database stayed away: their leases run out, the reaper rescues
                logger.warning(
                    "could not release unstarted jobs before the grace period ended",
                    extra={"worker_id": w.id, "jobs": len(unstarted)},
                )
        # 2. Wait for in-flight jobs, up to the grace period.
        wake = self.claimer.wake
        while time.monotonic() < deadline and len(self.slots):
            wake.wait(0.05)
            wake.clear()
        # 3. Whatever still runs has its attempt failed with the reason, and is retried.
        for slot in self.slots.abandon_running():
            self.executor.abandon(
                slot,
                InterruptedError(
                    f"worker {w.id} shut down after a grace period of {w.grace_s}s "
                    "while the job was still running"
                ),
            )
        # 4. Let the flusher write everything.
        deadline = time.monotonic() + max(w.connect_timeout_s, 5.0)
        while time.monotonic() < deadline and (len(self.slots) or not self.flusher.is_idle()):
            wake.wait(0.01)
            wake.clear()

    def _end(self, started: bool) -> None:
        """Stop every thread of the run and wait for them; deregister the worker."""
        w = self.w
        self.claimer.close()
        stuck = self.executor.stop(timeout_s=1.0) if started else []
        self.halt.set()
        self._deafen()
        self.flusher.wake()
        for thread in self.threads:
            thread.join(timeout=max(w.connect_timeout_s, 5.0))
        for name in stuck:
            logger.warning(
                "task thread still running after the worker stopped",
                extra={"worker_id": w.id, "thread_name": name},
            )
        with contextlib.suppress(DatabaseError):
            self.backend.deregister_worker(w.id)
        logger.info(
            "worker stopped",
            extra={"worker_id": w.id, "completed": w.stats.completed, "failed": w.stats.failed},
        )


def _positive(name: str, value: object, *, integer: bool = False) -> None:
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok or not value > 0:  # type: ignore[operator]  # checked
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{name} must be {kind} > 0, got {value!r}")
