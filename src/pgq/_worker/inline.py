"""The synchronous driver behind `InMemoryBackend.run_until_empty`: claims one job per queue
at a time, runs it in the calling thread, and writes its outcome with the worker's own
`ResultWriter`, so that tests see exactly the worker's rules. Instead of sleeping, it moves
the backend's clock to the next due job."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, Protocol

from pgq._backends.clock import Clock
from pgq._backends.ports import Backend
from pgq._core.tasks import Task, resolve_tasks
from pgq._worker.attempt import run_attempt
from pgq._worker.events import Hooks
from pgq._worker.policies import QueuePolicies
from pgq._worker.results import ResultWriter

WORKER_ID = "in-memory"


class Driven(Backend, Protocol):
    """A backend whose clock the driver moves (the in-memory one)."""

    clock: Clock

    def next_run_at(self) -> datetime | None: ...


def run_until_empty(
    backend: Driven, *, tasks: Iterable[str | Task[..., Any]], max_runs: int
) -> int:
    """Run every job, retries included, to a terminal state; return how many attempts ran."""
    known = resolve_tasks(list(tasks))
    stamped = {n: t.max_attempts for n, t in known.items() if t.max_attempts is not None}
    policies = QueuePolicies({}, None)
    writer = ResultWriter(
        backend,
        worker_id=WORKER_ID,
        policies=policies,
        hooks=Hooks(),
    )
    runs = 0
    while True:
        policies.refresh(backend)
        queues = backend.runnable_queues()
        claimed = backend.claim(
            worker_id=WORKER_ID,
            wants=[(q, 1) for q in queues],
            lease_s=3600.0,
            max_attempts=stamped,
        )
        if not claimed:
            due = backend.next_run_at()
            if due is None:
                return runs
            backend.clock.advance_to(due)
            backend.advance_circuits()
            continue
        for job in claimed:
            runs += 1
            if runs > max_runs:
                raise RuntimeError(f"run_until_empty ran {max_runs} attempts and jobs remain")
            writer.write([(job, job.lease, run_attempt(job, known, policies.stored))])
