"""Running one attempt of a job: find its task, check its payload, call it, judge the outcome.

Shared by the worker's task threads and `InMemoryBackend.run_until_empty`, so both apply the
same rules. No I/O here beyond calling the task.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pgq._core.context import Context
from pgq._core.decisions import first_set
from pgq._core.domain import (
    DEFAULT_BACKOFF,
    DEFAULT_MAX_ATTEMPTS,
    GiveUp,
    Outcome,
    after_failure,
    describe_error,
)
from pgq._core.policy import Queue
from pgq._core.records import ClaimedJob
from pgq._core.tasks import Task

logger = logging.getLogger("pgq.worker")


class UnknownTask(Exception):
    """The worker has no task of the job's name: the attempt fails (retried, then dead)."""


@dataclass(frozen=True, slots=True)
class Failed:
    """An attempt that failed: the error text kept, what it leads to, and the exception's class
    when the failure may count toward the queue's circuit (None: an unknown task, an
    undecodable payload or a shutdown, which say nothing about the downstream)."""

    error: str
    outcome: Outcome
    kind: type[BaseException] | None = None


def effective_max_attempts(
    job: ClaimedJob, task: Task[..., Any] | None, policy: Queue | None = None
) -> int:
    """The job's own, then its task's, then its queue's, then the default (first_set)."""
    return first_set(
        job.max_attempts,
        task.max_attempts if task is not None else None,
        policy.max_attempts if policy is not None else None,
        default=DEFAULT_MAX_ATTEMPTS,
    )


def judge(
    job: ClaimedJob,
    task: Task[..., Any] | None,
    error: BaseException,
    policy: Queue | None = None,
    *,
    counts: bool = True,
) -> Failed:
    """The outcome of a failed attempt, under the job's, task's and queue's retry settings."""
    backoff = first_set(
        task.backoff if task is not None else None,
        policy.backoff if policy is not None else None,
        default=DEFAULT_BACKOFF,
    )
    outcome = after_failure(
        attempt=job.attempt,
        max_attempts=effective_max_attempts(job, task, policy),
        backoff=backoff,
        error=error,
    )
    return Failed(describe_error(error), outcome, type(error) if counts else None)


def counts_for_circuit(failed: Failed, policy: Queue | None) -> bool:
    """Whether a failed attempt counts toward its queue's circuit breaker."""
    return (
        policy is not None
        and policy.circuit is not None
        and failed.kind is not None
        and policy.circuit.counts(failed.kind)
    )


def prepare(
    job: ClaimedJob,
    tasks: Mapping[str, Task[..., Any]],
    policies: Mapping[str, Queue] | None = None,
) -> tuple[Task[..., Any], dict[str, Any]] | Failed:
    """The task and keyword arguments for an attempt, or why it cannot run."""
    task = tasks.get(job.task)
    if task is None:
        return judge(
            job,
            None,
            UnknownTask(
                f"unknown task {job.task!r}: this worker does not know it "
                "(is its module among the worker's task modules?)"
            ),
            policies.get(job.queue) if policies else None,
            counts=False,
        )
    problem = task.args_problem(job.args)
    if problem is not None:
        reason = f"undecodable payload: {problem}"
        return Failed(reason, GiveUp(reason))
    kwargs = dict(job.args)
    if task.ctx_param is not None:
        kwargs[task.ctx_param] = Context(
            job_id=job.id,
            attempt=job.attempt,
            queue=job.queue,
            task=job.task,
            worker_id=job.worker_id,
            max_attempts=effective_max_attempts(
                job, task, policies.get(job.queue) if policies else None
            ),
        )
    return task, kwargs


def call(task: Task[..., Any], kwargs: dict[str, Any]) -> None:
    """Run the task body (an `async def` task on an event loop of its own)."""
    if task.is_async:
        asyncio.run(task.fn(**kwargs))
    else:
        task.fn(**kwargs)


def run_attempt(
    job: ClaimedJob, tasks: Mapping[str, Task[..., Any]], policies: Mapping[str, Queue]
) -> Failed | None:
    """Run one attempt to its end in this thread; None on success."""
    prepared = prepare(job, tasks, policies)
    if isinstance(prepared, Failed):
        return prepared
    task, kwargs = prepared
    try:
        call(task, kwargs)
    except Exception as exc:
        return judge(job, task, exc, policies.get(job.queue))
    return None
