"""The one place that tells what happened to jobs: the worker's parts emit events here, and
subscribers (the log below; metrics, traces and richer logs later) listen.

Events are batched where jobs are (one `AttemptsFinished` per written batch), so a subscriber
costs one call per batch on the hot path, not one per job. A subscriber that raises is logged
and never disturbs the worker.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

from pgq._core.domain import Lease
from pgq._core.records import ClaimedJob

logger = logging.getLogger("pgq.worker")

Outcome = Literal["completed", "retried", "dead", "discarded"]


@dataclass(frozen=True, slots=True)
class JobsClaimed:
    worker_id: str
    jobs: Sequence[ClaimedJob]


class FinishedAttempt(NamedTuple):
    """One attempt's outcome (a tuple: one is made per job, on the hot path)."""

    job: ClaimedJob
    outcome: Outcome
    error: str | None  # the failure (or the late outcome, when discarded); None on success


@dataclass(frozen=True, slots=True)
class AttemptsFinished:
    """One written batch of results: the jobs that completed, and every other outcome (retried,
    dead, discarded) with its error. Completions carry no object of their own: on the hot path
    a batch of 500 completions costs one list."""

    worker_id: str
    completed: Sequence[ClaimedJob]
    others: Sequence[FinishedAttempt]

    def outcomes(self) -> list[FinishedAttempt]:
        """Every attempt of the batch with its outcome (builds one tuple per completion)."""
        return [FinishedAttempt(job, "completed", None) for job in self.completed] + list(
            self.others
        )


@dataclass(frozen=True, slots=True)
class LeasesLost:
    worker_id: str
    leases: Sequence[Lease]


@dataclass(frozen=True, slots=True)
class CircuitMoved:
    worker_id: str
    queue: str
    state: str  # the new state: open, half-open or closed ("*" for several queues at once)
    error: str | None = None


@dataclass(frozen=True, slots=True)
class LeasesReaped:
    worker_id: str
    by_queue: dict[str, int]


@dataclass(frozen=True, slots=True)
class JobsPruned:
    worker_id: str
    count: int


@dataclass(frozen=True, slots=True)
class ConfigReloaded:
    worker_id: str
    file: str
    queues: Sequence[str]  # those whose live settings changed
    restart_required: Sequence[str]  # what the file changed that only a restart applies


@dataclass(frozen=True, slots=True)
class ConfigRefused:
    worker_id: str
    file: str
    error: str


Event = (
    JobsClaimed
    | AttemptsFinished
    | LeasesLost
    | CircuitMoved
    | LeasesReaped
    | JobsPruned
    | ConfigReloaded
    | ConfigRefused
)
Subscriber = Callable[[Event], None]


class Hooks:
    """Subscribers of a worker's events, called in the emitting thread, in order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards _subscribers (swapped whole, read without it)
        self._subscribers: tuple[Subscriber, ...] = (log_event,)

    def subscribe(self, fn: Subscriber) -> Callable[[], None]:
        """Add a subscriber; returns the function that removes it."""
        with self._lock:
            self._subscribers = (*self._subscribers, fn)

        def unsubscribe() -> None:
            with self._lock:
                self._subscribers = tuple(s for s in self._subscribers if s is not fn)

        return unsubscribe

    def emit(self, event: Event) -> None:
        for fn in self._subscribers:
            try:
                fn(event)
            except Exception:
                logger.exception("event subscriber failed", extra={"event": type(event).__name__})


def log_event(event: Event) -> None:
    """The worker's log: fixed phrases, the values as fields (STYLE.md, Logging)."""
    match event:
        case AttemptsFinished(worker_id, _, others):
            for a in others:
                job = a.job
                if a.outcome == "dead":
                    logger.warning(
                        "job dead",
                        extra={
                            "job_id": job.id,
                            "task": job.task,
                            "queue": job.queue,
                            "attempt": job.attempt,
                            "error": a.error,
                        },
                    )
                elif a.outcome == "discarded":
                    logger.warning(
                        "late result discarded",
                        extra={"job_id": job.id, "attempt": job.attempt, "worker_id": worker_id},
                    )
        case LeasesLost(worker_id, leases):
            for lease in leases:
                logger.warning(
                    "lease lost",
                    extra={
                        "job_id": lease.job_id,
                        "attempt": lease.attempt,
                        "worker_id": worker_id,
                    },
                )
        case CircuitMoved(worker_id, queue, state, error):
            if state == "open":
                logger.warning(
                    "circuit opened", extra={"queue": queue, "worker_id": worker_id, "error": error}
                )
            elif state == "closed":
                logger.info("circuit closed", extra={"queue": queue, "worker_id": worker_id})
            else:
                logger.info("circuit half-open: sending probes", extra={"worker_id": worker_id})
        case LeasesReaped(worker_id, by_queue):
            logger.info(
                "reaper took back expired leases",
                extra={"worker_id": worker_id, "jobs": sum(by_queue.values())},
            )
        case JobsPruned(worker_id, count):
            logger.info("pruned finished jobs", extra={"worker_id": worker_id, "jobs": count})
        case ConfigReloaded(worker_id, file, queues, changes):
            if queues:
                logger.info(
                    "config reloaded",
                    extra={"worker_id": worker_id, "queues": sorted(queues), "file": file},
                )
            for change in changes:
                # The change stays in the message: operators grep for it (docs/queues.md).
                logger.warning(f"restart required: {change}", extra={"worker_id": worker_id})
        case ConfigRefused(worker_id, file, error):
            logger.warning(
                "config refused; keeping the last good one",
                extra={"worker_id": worker_id, "error": error, "file": file},
            )
        case _:
            pass
