"""Decisions both backends take, written once: the in-memory backend calls these functions, and
where the PostgreSQL backend must decide inside its statement (for atomicity) the query's
comment in postgres.sql names its twin here; the contract suite (tests/contract/
test_decisions_contract.py) gives both backends the same table of cases.

Pure: values in, values out; no clock is read (`now` comes from the caller's database).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final, TypeVar

from pgq._core.domain import CircuitState, State
from pgq._core.policy import (
    DEFAULT_RETENTION_COMPLETED_S,
    DEFAULT_RETENTION_DEAD_S,
    Queue,
    Retention,
)

T = TypeVar("T")


def first_set(*layers: T | None, default: T) -> T:
    """The precedence of every setting: what the job was enqueued with, then its task's own
    setting, then its queue's policy, then the default: the first that is set.

    >>> first_set(None, 3, 5, default=10)
    3
    >>> first_set(None, None, None, default=10)
    10
    """
    for value in layers:
        if value is not None:
            return value
    return default


@dataclass(frozen=True, slots=True)
class Allowance:
    """How many jobs a queue may give to one claim now, and whether they are half-open probes."""

    limit: int
    probe: bool = False


def claim_allowance(
    wanted: int,
    policy: Queue | None,
    *,
    paused: bool,
    circuit: CircuitState,
    running: int,
    recent_starts: int,
) -> Allowance:
    """What a claim may take from a queue (the `allowed` CTE of postgres.sql's `claim`).

    No policy: what was asked. Paused, or an open circuit cooling down: nothing. Half-open: at
    most `probes` running at once, as probes. A cap: at most `concurrency` running at once
    (`running` counts every leased job of the queue, across workers). A rate: at most
    `rate.limit` starts within the last period (`recent_starts`, counted in buckets of a
    twentieth of the period, see `rate_window_s`).

    >>> from pgq._core.policy import Queue, Rate
    >>> claim_allowance(10, Queue("q", concurrency=3), paused=False,
    ...                 circuit=CircuitState.CLOSED, running=1, recent_starts=0)
    Allowance(limit=2, probe=False)
    >>> claim_allowance(10, Queue("q", rate=Rate(5)), paused=False,
    ...                 circuit=CircuitState.CLOSED, running=0, recent_starts=5)
    Allowance(limit=0, probe=False)
    """
    if policy is None:
        return Allowance(wanted)
    if paused:
        return Allowance(0)
    limit, probe = wanted, False
    if policy.circuit is not None:
        if circuit is CircuitState.OPEN:
            return Allowance(0)
        if circuit is CircuitState.HALF_OPEN:
            limit, probe = min(limit, policy.circuit.probes - running), True
    if policy.concurrency is not None:
        limit = min(limit, policy.concurrency - running)
    if policy.rate is not None:
        limit = min(limit, policy.rate.limit - recent_starts)
    return Allowance(max(0, limit), probe)


def rate_window_s(policy: Queue) -> float:
    """How far back a claim counts a rated queue's starts: the period and one bucket more, so
    that the bucket the window's start falls in is counted whole (never too few starts)."""
    assert policy.rate is not None
    return policy.rate.per * 1.05


def retention_s(state: State, retention: Retention | None) -> float | None:
    """How long a finished job is kept (seconds after finished_at); None if it is not finished.
    The `prune_finished` statement passes the defaults from here."""
    keep = retention or Retention()
    if state is State.COMPLETED:
        return keep.completed
    if state in (State.DEAD, State.CANCELLED):
        return keep.dead
    return None


RETENTION_DEFAULTS_S: Final = {
    "completed_s": DEFAULT_RETENTION_COMPLETED_S,
    "dead_s": DEFAULT_RETENTION_DEAD_S,
}

# -- event texts: the words every backend writes into job_events.error -----------------------

RELEASED_ON_SHUTDOWN: Final = "released unstarted by worker shutdown"
DISCARDED_PREFIX: Final = "late result discarded (the attempt had already ended): "


def discarded_error(outcome: str) -> str:
    """The error of a `discarded` event: a late result, and what it would have been."""
    return DISCARDED_PREFIX + outcome


def iso_ms(when: datetime) -> str:
    """A database timestamp as event texts show it: UTC, milliseconds, `Z`."""
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def lease_expired_error(
    worker_id: str | None, last_seen: datetime | None, expired_at: datetime
) -> str:
    """Why the reaper took a job back (reap_expired builds the same text in SQL, where the
    worker's last heartbeat is read in the same statement)."""
    seen = iso_ms(last_seen) if last_seen is not None else "never (worker gone)"
    return (
        f"lease expired: worker {worker_id or 'unknown'} last seen {seen}, "
        f"lease ran out at {iso_ms(expired_at)}"
    )
