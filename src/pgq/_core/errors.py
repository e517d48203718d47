"""pgq's exceptions, in one hierarchy.

```
PgqError
├── EnqueueError (also ValueError)    bad input to enqueue; nothing was written
├── ConfigError (also ValueError)     a setting out of range; names the setting and the value
├── TaskNotFound (also LookupError)   a dotted name that does not import, or is not a task
├── JobNotFound (also LookupError)    retry_job / cancel_job on an id that does not exist
├── InvalidTransition                 e.g. retry_job on a running job
└── DatabaseError                     a psycopg error translated at the backend edge; __cause__ kept
Retry, Fail                           raised by tasks to steer the outcome: instructions, not errors
```
"""

from __future__ import annotations


class PgqError(Exception):
    """Base class of every error pgq raises."""


class EnqueueError(PgqError, ValueError):
    """Bad input to `enqueue` / `enqueue_many`; nothing was written."""


class ConfigError(PgqError, ValueError):
    """A setting is out of range; the message names the setting and the value."""


class TaskNotFound(PgqError, LookupError):
    """A dotted name that does not import, or that names something that is not a task."""


class JobNotFound(PgqError, LookupError):
    """No job has that id."""


class InvalidTransition(PgqError):
    """The job's state does not allow the requested change (e.g. cancelling a completed job)."""


class DatabaseError(PgqError):
    """A database error, translated at the backend edge; the driver's error is the `__cause__`."""


class Retry(Exception):
    """Raise inside a task to retry on purpose.

    `delay` is in seconds; `None` uses the task's backoff. The attempt still counts towards
    `max_attempts`.
    """

    def __init__(self, delay: float | None = None, reason: str = "") -> None:
        if delay is not None and delay < 0:
            raise ValueError(f"retry delay must be >= 0 seconds, got {delay!r}")
        self.delay = delay
        self.reason = reason
        super().__init__(reason or (f"retry in {delay}s" if delay is not None else "retry"))


class Fail(Exception):
    """Raise inside a task to give up at once: the job goes to `dead` with this reason."""
