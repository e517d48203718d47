"""pgq: a job queue for Python that needs nothing but PostgreSQL.

Enqueue jobs inside your own transaction; workers claim them with FOR UPDATE SKIP LOCKED under
heartbeated leases, retry failures with backoff, dead-letter what runs out of attempts, and
record every state change as an event. See https://github.com/ (docs/ in the repository).
"""

from __future__ import annotations

from pgq._api import (
    cancel_job,
    enqueue,
    enqueue_many,
    get_job,
    list_jobs,
    list_queues,
    pause_queue,
    resume_queue,
    retry_job,
)
from pgq._core.context import Context
from pgq._core.domain import Backoff, State
from pgq._core.errors import (
    ConfigError,
    DatabaseError,
    EnqueueError,
    Fail,
    InvalidTransition,
    JobNotFound,
    PgqError,
    Retry,
    TaskNotFound,
)
from pgq._core.policy import Circuit, Queue, Rate, Retention, load_config
from pgq._core.records import Enqueued, JobEvent, JobRecord, JobSpec, QueueEvent, QueueInfo
from pgq._core.tasks import Task, task
from pgq._migrate import migrate, schema_sql
from pgq._worker import Worker

__version__ = "0.1.0.dev0"

__all__ = [
    "Backoff",
    "Circuit",
    "ConfigError",
    "Context",
    "DatabaseError",
    "EnqueueError",
    "Enqueued",
    "Fail",
    "InvalidTransition",
    "JobEvent",
    "JobNotFound",
    "JobRecord",
    "JobSpec",
    "PgqError",
    "Queue",
    "QueueEvent",
    "QueueInfo",
    "Rate",
    "Retention",
    "Retry",
    "State",
    "Task",
    "TaskNotFound",
    "Worker",
    "__version__",
    "cancel_job",
    "enqueue",
    "enqueue_many",
    "get_job",
    "list_jobs",
    "list_queues",
    "load_config",
    "migrate",
    "pause_queue",
    "resume_queue",
    "retry_job",
    "schema_sql",
    "task",
]
