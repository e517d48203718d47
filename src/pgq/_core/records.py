"""What users get back from pgq, and what the worker and backends pass between them.

Frozen, slotted dataclasses: rows become these where they leave the database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from pgq._core.domain import Lease

if TYPE_CHECKING:
    from pgq._core.policy import Queue
    from pgq._core.tasks import Task


class Enqueued(NamedTuple):
    """The result of an enqueue: the job's id, and whether this call created it.

    `created` is False when a job with the same queue and idempotency key already existed; `id`
    is then that job's id. (A NamedTuple: a bulk enqueue builds thousands of them.)
    """

    id: int
    created: bool = True


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One job for `pgq.enqueue_many`; the fields mean what `pgq.enqueue`'s arguments mean."""

    task: Task[..., Any] | str
    args: dict[str, Any] | None = None
    queue: str | None = None
    priority: int | None = None
    run_at: datetime | None = None
    delay: float | None = None
    idempotency_key: str | None = None
    max_attempts: int | None = None


class NewJob(NamedTuple):
    """A validated job, ready for a backend to write. `args_json` is the args as JSON text."""

    queue: str
    task: str
    args_json: str
    priority: int
    run_at: datetime | None
    delay_s: float
    idempotency_key: str | None
    max_attempts: int | None


class ClaimedJob(NamedTuple):
    """A job a worker holds under a lease. `args` is whatever the row holds (checked before use).

    A NamedTuple: a claim builds up to a hundred at a time from the row tuples.
    """

    id: int
    queue: str
    task: str
    args: Any
    attempt: int
    max_attempts: int | None
    worker_id: str
    probe: bool = False  # claimed while its queue's circuit was half-open

    @property
    def lease(self) -> Lease:
        return Lease(self.id, self.attempt, self.worker_id)


@dataclass(frozen=True, slots=True)
class JobEvent:
    """One state transition of a job (or a `discarded` late result), oldest first in JobRecord."""

    from_state: str | None
    to_state: str
    attempt: int
    at: datetime
    worker_id: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class JobRecord:
    """A job as stored, with its event timeline (`events`, oldest first; the first is the enqueue).

    `max_attempts` is None when the job was enqueued without one and its task was unknown to
    the producer; the worker then applies the task's setting, else the default (5).
    """

    id: int
    queue: str
    task: str
    args: Any
    state: str
    attempt: int
    max_attempts: int | None
    last_error: str | None
    run_at: datetime
    created_at: datetime
    finished_at: datetime | None
    priority: int = 0
    idempotency_key: str | None = None
    worker_id: str | None = None
    lease_expires_at: datetime | None = None
    events: list[JobEvent] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class QueueEvent:
    """A change to a queue: a circuit transition, a pause or resume, or a policy write."""

    kind: str  # "circuit", "paused", "resumed" or "policy"
    at: datetime
    from_state: str | None = None
    to_state: str | None = None
    reason: str | None = None
    worker_id: str | None = None


@dataclass(frozen=True, slots=True)
class QueueInfo:
    """A queue as `pgq queues` shows it (`pgq.list_queues`).

    `counts` maps each job state to how many jobs of the queue are in it; `policy` is what the
    workers wrote for it (None when no worker declared a policy); `restart_required` lists what
    live workers refused to apply from a reloaded config until they restart.
    """

    name: str
    counts: dict[str, int]
    policy: Queue | None
    paused: bool
    circuit_state: str
    circuit_since: datetime | None
    circuit_reason: str | None
    oldest_runnable_age_s: float | None
    restart_required: list[str] = field(default_factory=list)
    events: list[QueueEvent] = field(default_factory=list)  # the latest, newest first

    @property
    def running(self) -> int:
        return self.counts.get("running", 0)
