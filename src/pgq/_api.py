"""The public functions: validate input, then call a Backend."""

from __future__ import annotations

import math
import socket
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pgq._backends.targets import backend_for
from pgq._core.domain import (
    DEFAULT_QUEUE,
    MAX_IDEMPOTENCY_KEY,
    State,
    check_queue_name,
)
from pgq._core.errors import ConfigError, EnqueueError
from pgq._core.records import Enqueued, JobRecord, JobSpec, NewJob, QueueInfo
from pgq._core.tasks import Task, encode_args, json_problem, registered


def _new_job(spec: JobSpec) -> NewJob:
    return _validated(
        spec.task,
        spec.args,
        spec.queue,
        spec.priority,
        spec.run_at,
        spec.delay,
        spec.idempotency_key,
        spec.max_attempts,
    )


def _validated(  # noqa: PLR0917 - a JobSpec's fields, positional on the hot path
    task: object,
    args_given: dict[str, Any] | None,
    queue_given: str | None,
    priority_given: int | None,
    run_at: datetime | None,
    delay_given: float | None,
    key: str | None,
    max_attempts_given: int | None,
) -> NewJob:
    """A NewJob from what the caller gave, or EnqueueError saying what is wrong."""
    if isinstance(task, str):
        name = task
        known = registered(name)
    elif isinstance(task, Task):
        name, known = task.name, task
    else:
        raise EnqueueError(f"task must be a pgq task or its dotted name, got {task!r}")
    if not name or len(name) > 255:
        raise EnqueueError(f"task name must be 1-255 characters, got {name!r}")

    args: Any = {} if args_given is None else args_given
    if not isinstance(args, dict):
        raise EnqueueError(f"args for {name} must be a dict, got {type(args).__name__}")
    args_json: str | None = None
    if known is not None and known.args_fit(args):
        # Certainly JSON and fitting, by exact types: the full check is skipped. A typed task's
        # check encodes the args at this point (and raises for an int beyond 64 bits), so the
        # fast path encodes here too, once.
        if known.typed:
            args_json = encode_args(name, args).decode()
    else:  # the full check, which says what is wrong
        problem = json_problem(args)
        if problem is not None:
            raise EnqueueError(f"args for {name} are not JSON: {problem}")
        if known is not None:
            known.check_args(args)

    queue = queue_given if queue_given is not None else (known.queue if known else DEFAULT_QUEUE)
    try:
        check_queue_name(queue)
    except ValueError as exc:
        raise EnqueueError(str(exc)) from None

    delay = 0.0 if delay_given is None else delay_given
    if (
        isinstance(delay, bool)
        or not isinstance(delay, int | float)
        or not math.isfinite(delay)
        or delay < 0
    ):
        raise EnqueueError(f"delay must be a finite number of seconds >= 0, got {delay_given!r}")
    if run_at is not None and (not isinstance(run_at, datetime) or run_at.tzinfo is None):
        raise EnqueueError(f"run_at must be a timezone-aware datetime, got {run_at!r}")
    priority = priority_given if priority_given is not None else (known.priority if known else 0)
    if isinstance(priority, bool) or not isinstance(priority, int) or abs(priority) > 2**31 - 1:
        raise EnqueueError(f"priority must be a 32-bit integer, got {priority!r}")
    if key is not None and (not isinstance(key, str) or not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY):
        raise EnqueueError(
            f"idempotency_key must be 1-{MAX_IDEMPOTENCY_KEY} characters, got {key!r}"
        )
    max_attempts = max_attempts_given
    if max_attempts is None and known is not None:
        max_attempts = known.max_attempts
    if max_attempts is not None and (
        isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1
    ):
        raise EnqueueError(f"max_attempts must be an integer >= 1, got {max_attempts!r}")
    # positional: a bulk enqueue builds thousands of these
    if args_json is None:
        args_json = encode_args(name, args).decode()
    return NewJob(
        queue, name, args_json, priority, run_at, float(delay), key, max_attempts,
    )  # fmt: skip


def enqueue(
    target: object,
    task: Task[..., Any] | str,
    args: dict[str, Any] | None = None,
    *,
    queue: str | None = None,
    priority: int | None = None,
    run_at: datetime | None = None,
    delay: float | None = None,
    idempotency_key: str | None = None,
    max_attempts: int | None = None,
    schema: str | None = None,
) -> Enqueued:
    """Enqueue one job in the caller's transaction; it never commits.

    Args:
        target: a psycopg Connection, a SQLAlchemy Connection or Session, a DSN string (its own
            transaction, committed), or `pgq.testing.InMemoryBackend`.
        task: a task object, or its dotted name (a producer need not import the task's code).
        args: the task's keyword arguments, JSON only; checked against the task's signature
            when the task is known in this process.
        queue: default the task's queue, else "default".
        priority: lower runs first within a queue; default the task's, else 0.
        run_at: a timezone-aware time to run at; `delay` (seconds, >= 0) is added to it.
        idempotency_key: at most one job per (queue, key): a second enqueue returns the first
            job's id with `created=False`.
        max_attempts: how many times the job may run; default the task's, else 5.
        schema: the schema pgq's tables live in; default "pgq".

    Raises:
        EnqueueError: bad input; nothing was written.
        DatabaseError: the database refused the write.

    Example:
        >>> with psycopg.connect(dsn) as conn, conn.transaction():  # doctest: +SKIP
        ...     job = pgq.enqueue(conn, send_email, {"to": "a@b.c"}, idempotency_key="order-5512")
    """
    # enqueue_many's work for a batch of one, without the batch: the common call, in a hot loop.
    job = _validated(task, args, queue, priority, run_at, delay, idempotency_key, max_attempts)
    with backend_for(target, schema=schema) as backend:
        [result] = backend.enqueue_many([job])
    return result


def enqueue_many(
    target: object, jobs: Sequence[JobSpec], *, schema: str | None = None
) -> list[Enqueued]:
    """Enqueue many jobs in one round trip, in the caller's transaction; results in input order.

    Every spec is validated before anything is written: one bad spec writes nothing. Specs that
    share a queue and idempotency key within the batch become one job.
    """
    new: list[NewJob] = []
    for i, spec in enumerate(jobs):
        if not isinstance(spec, JobSpec):
            raise EnqueueError(f"jobs[{i}] must be a pgq.JobSpec, got {type(spec).__name__}")
        try:
            new.append(_new_job(spec))
        except EnqueueError as exc:
            raise EnqueueError(f"jobs[{i}]: {exc}" if len(jobs) > 1 else str(exc)) from None
    # Fold duplicate keys within the batch: ON CONFLICT cannot touch one row twice.
    first: dict[tuple[str, str], int] = {}
    unique: list[NewJob] = []
    position: list[int] = []
    for job in new:
        if job.idempotency_key is not None:
            key = (job.queue, job.idempotency_key)
            if key in first:
                position.append(first[key])
                continue
            first[key] = len(unique)
        position.append(len(unique))
        unique.append(job)
    with backend_for(target, schema=schema) as backend:
        written = backend.enqueue_many(unique)
    seen: set[int] = set()
    out: list[Enqueued] = []
    for p in position:
        result = written[p]
        out.append(result if p not in seen else Enqueued(id=result.id, created=False))
        seen.add(p)
    return out


def get_job(target: object, job_id: int, *, schema: str | None = None) -> JobRecord | None:
    """The job with that id and its event timeline (oldest first), or None."""
    with backend_for(target, schema=schema) as backend:
        return backend.get_job(job_id)


def list_jobs(
    target: object,
    queue: str | None = None,
    state: str | None = None,
    limit: int = 100,
    *,
    schema: str | None = None,
) -> list[JobRecord]:
    """Jobs newest first, optionally of one queue and/or one state (a `pgq.State` or its name)."""
    if state is not None:
        try:
            state = str(State(state))
        except ValueError:
            allowed = ", ".join(s.value for s in State)
            raise ValueError(f"state must be one of {allowed}; got {state!r}") from None
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit!r}")
    with backend_for(target, schema=schema) as backend:
        return backend.list_jobs(queue=queue, state=state, limit=limit)


def retry_job(target: object, job_id: int, *, schema: str | None = None) -> JobRecord:
    """Replay a dead or cancelled job: back to `queued`, runnable now, with fresh attempts.

    Raises JobNotFound, or InvalidTransition for a job in any other state.
    """
    with backend_for(target, schema=schema) as backend:
        return backend.retry_job(job_id)


def cancel_job(target: object, job_id: int, *, schema: str | None = None) -> JobRecord:
    """Cancel a queued or retrying job. Raises JobNotFound, or InvalidTransition otherwise."""
    with backend_for(target, schema=schema) as backend:
        return backend.cancel_job(job_id)


def list_queues(target: object, *, schema: str | None = None) -> list[QueueInfo]:
    """Every queue that has jobs or a stored policy, by name, as `pgq queues` shows them: jobs
    per state, the policy workers wrote for it, paused, circuit state and since when, the age
    of its oldest runnable job, what live workers refused to reload, and its latest changes."""
    with backend_for(target, schema=schema) as backend:
        return backend.list_queues()


def pause_queue(target: object, queue: str, *, schema: str | None = None) -> bool:
    """Pause a queue: it still accepts jobs, but no claim that starts after this returns (and
    the caller's transaction commits) takes any; jobs already running finish. False if it was
    paused already."""
    return _set_paused(target, queue, True, schema)


def resume_queue(target: object, queue: str, *, schema: str | None = None) -> bool:
    """Resume a paused queue and wake idle workers. False if it was not paused."""
    return _set_paused(target, queue, False, schema)


def _set_paused(target: object, queue: str, paused: bool, schema: str | None) -> bool:
    try:
        check_queue_name(queue)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    by = f"operator@{socket.gethostname()}"
    with backend_for(target, schema=schema) as backend:
        return backend.set_paused(queue, paused, by=by)
