"""pgq: a job queue for Python that needs nothing but PostgreSQL.

Enqueue jobs inside your own transaction; workers claim them with FOR UPDATE SKIP LOCKED under
heartbeated leases, retry failures with backoff, dead-letter what runs out of attempts, and
record every state change as an event. See https://github.com/ (docs/ in the repository).
"""

from __future__ import annotations

from pgq._api import cancel_job, enqueue, enqueue_many, get_job, list_jobs, retry_job
from pgq._domain import Backoff, State
from pgq._errors import (
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
from pgq._migrate import migrate, schema_sql
from pgq._records import Context, Enqueued, JobEvent, JobRecord, JobSpec
from pgq._tasks import Task, task
from pgq._worker import Worker

__version__ = "0.1.0.dev0"

__all__ = [
    "Backoff",
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
    "migrate",
    "retry_job",
    "schema_sql",
    "task",
]
