"""States, allowed transitions, leases and retry decisions: pure, standard library only.

Backends apply these decisions; they never make their own. The one decision that must live in
SQL for atomicity (the reaper's "retrying or dead" when a lease expires) mirrors
`after_lease_expired` and is kept in step by the contract suite.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final, NamedTuple

from pgq._core.errors import Fail, Retry

DEFAULT_QUEUE: Final = "default"
DEFAULT_MAX_ATTEMPTS: Final = 5
MAX_QUEUE_NAME: Final = 63
MAX_IDEMPOTENCY_KEY: Final = 255
SCHEMA_RE: Final = re.compile(r"^[a-z_][a-z0-9_]{0,47}$")


class State(StrEnum):
    """A job's state. Each member's docstring says what moves a job on from it."""

    QUEUED = "queued"
    """Waiting; runnable once run_at <= now(). A claim moves it on; an operator may cancel."""
    RUNNING = "running"
    """Claimed by one worker under a lease. Its result, the reaper, or a shutdown moves it on."""
    RETRYING = "retrying"
    """An attempt failed; runnable again at run_at. A claim moves it on; an operator may cancel."""
    COMPLETED = "completed"
    """Finished successfully. Terminal."""
    DEAD = "dead"
    """Gave up; last_error says why. Only an operator's replay moves it on."""
    CANCELLED = "cancelled"
    """Stopped by an operator. Only an operator's replay moves it on."""


RUNNABLE: Final = frozenset({State.QUEUED, State.RETRYING})

# DESIGN.md's state table, as data. The contract suite walks it against both backends.
TRANSITIONS: Final[Mapping[State, frozenset[State]]] = {
    State.QUEUED: frozenset({State.RUNNING, State.CANCELLED}),
    State.RUNNING: frozenset({State.COMPLETED, State.RETRYING, State.DEAD, State.QUEUED}),
    State.RETRYING: frozenset({State.RUNNING, State.CANCELLED}),
    State.COMPLETED: frozenset(),
    State.DEAD: frozenset({State.QUEUED}),
    State.CANCELLED: frozenset({State.QUEUED}),
}

DISCARDED: Final = "discarded"
"""Not a state: the `to_state` of the event written when a late result is thrown away."""


def can_move(from_state: State, to_state: State) -> bool:
    """Whether DESIGN.md allows `from_state -> to_state`.

    >>> can_move(State.DEAD, State.QUEUED), can_move(State.COMPLETED, State.QUEUED)
    (True, False)
    """
    return to_state in TRANSITIONS[from_state]


class Lease(NamedTuple):
    """The fencing token of one attempt: every write to a running job must present it.

    A NamedTuple: the worker builds and hashes one per job on its hot path.
    """

    job_id: int
    attempt: int
    worker_id: str


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter, in seconds.

    The delay before retry n is uniform in [0, min(cap, base * 2**(n-1))].
    """

    base: float = 1.0
    cap: float = 3600.0

    def __post_init__(self) -> None:
        if not self.base >= 0:
            raise ValueError(f"backoff base must be >= 0 seconds, got {self.base!r}")
        if not self.cap >= 0:
            raise ValueError(f"backoff cap must be >= 0 seconds, got {self.cap!r}")

    def delay_s(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**(attempt-1))].

        >>> Backoff(base=1.0, cap=10.0).delay_s(5000, rand=lambda: 0.5)
        5.0
        >>> Backoff(base=2.0).delay_s(1, rand=lambda: 1.0)
        2.0
        """
        return rand() * min(self.cap, self.base * 2.0 ** min(max(attempt, 1) - 1, 60))


DEFAULT_BACKOFF: Final = Backoff()


@dataclass(frozen=True, slots=True)
class RetryIn:
    """Outcome: run again after `delay_s` seconds (from the database's now())."""

    delay_s: float


@dataclass(frozen=True, slots=True)
class GiveUp:
    """Outcome: the job goes to `dead` with this reason."""

    reason: str


Outcome = RetryIn | GiveUp


def describe_error(error: BaseException) -> str:
    """The text kept in `last_error`: the type and message, bounded in length.

    >>> describe_error(ValueError("boom"))
    'ValueError: boom'
    """
    name = type(error).__qualname__
    module = type(error).__module__
    if module not in ("builtins", "pgq._core.errors"):
        name = f"{module}.{name}"
    text = f"{name}: {error}" if str(error) else name
    return text if len(text) <= 4000 else text[:3997] + "..."


def after_failure(
    *,
    attempt: int,
    max_attempts: int,
    backoff: Backoff,
    error: BaseException,
    rand: Callable[[], float] = random.random,
) -> Outcome:
    """What a failed attempt leads to: a duration, never a timestamp (the backend owns the clock).

    >>> after_failure(attempt=1, max_attempts=3, backoff=Backoff(), error=Fail("bad input"))
    GiveUp(reason='pgq.Fail: bad input')
    >>> after_failure(attempt=3, max_attempts=3, backoff=Backoff(), error=KeyError("x"))
    GiveUp(reason="attempt 3 of 3 failed: KeyError: 'x'")
    >>> after_failure(attempt=1, max_attempts=3, backoff=Backoff(), error=Retry(delay=7.0))
    RetryIn(delay_s=7.0)
    """
    if isinstance(error, Fail):
        return GiveUp(f"pgq.Fail: {error}")
    if attempt >= max_attempts:
        return GiveUp(f"attempt {attempt} of {max_attempts} failed: {describe_error(error)}")
    if isinstance(error, Retry) and error.delay is not None:
        return RetryIn(error.delay)
    return RetryIn(backoff.delay_s(attempt, rand))


def after_lease_expired(*, attempt: int, max_attempts: int) -> State:
    """Where the reaper sends a job whose lease expired; runnable again at once if retrying.

    The PostgreSQL backend makes this decision in SQL (reap_expired), in the same statement
    that takes the lease back.

    >>> after_lease_expired(attempt=2, max_attempts=2)
    <State.DEAD: 'dead'>
    """
    return State.DEAD if attempt >= max_attempts else State.RETRYING


class CircuitState(StrEnum):
    """A queue's circuit breaker, shared by every worker through the database."""

    CLOSED = "closed"
    """Jobs run; counted failures within the window are remembered."""
    OPEN = "open"
    """No worker claims from the queue until the cooldown has passed."""
    HALF_OPEN = "half_open"
    """At most `probes` jobs run at once; a success closes the circuit, a failure reopens it."""


@dataclass(frozen=True, slots=True)
class CircuitView:
    """A circuit as stored: its state, since when, the times of its recent counted failures."""

    state: CircuitState
    since: datetime
    recent: tuple[datetime, ...] = ()
    reason: str | None = None


def circuit_at(view: CircuitView, now: datetime, *, cooldown_s: float) -> CircuitState:
    """The state that holds at `now`: an open circuit is half-open once its cooldown passed.

    The claim statement makes the same test in SQL (kept in step by the contract suite).
    """
    return circuit_as_of(view, now, cooldown_s=cooldown_s).state


def circuit_as_of(view: CircuitView, now: datetime, *, cooldown_s: float) -> CircuitView:
    """The circuit as it stands at `now`, whether or not a worker has recorded its move to
    half-open yet (advance_circuits writes that move and its event)."""
    reopens = view.since + timedelta(seconds=cooldown_s)
    if view.state is CircuitState.OPEN and now >= reopens:
        return CircuitView(
            CircuitState.HALF_OPEN, reopens, view.recent, f"cooldown of {cooldown_s:g}s passed"
        )
    return view


def circuit_after_failures(
    view: CircuitView,
    *,
    now: datetime,
    count: int,
    failures: int,
    window_s: float,
    cooldown_s: float,
    error: str,
) -> CircuitView:
    """The circuit after `count` counted failures at `now`: `failures` of them within
    `window_s` seconds open a closed circuit; any failure reopens a half-open one.

    >>> t = datetime(2026, 1, 1)
    >>> v = CircuitView(CircuitState.CLOSED, t)
    >>> v = circuit_after_failures(v, now=t, count=2, failures=3, window_s=10, cooldown_s=5,
    ...                            error="boom")
    >>> v.state, len(v.recent)
    (<CircuitState.CLOSED: 'closed'>, 2)
    >>> later = t + timedelta(seconds=11)   # the first two fell out of the window
    >>> circuit_after_failures(v, now=later, count=1, failures=3, window_s=10, cooldown_s=5,
    ...                        error="boom").state
    <CircuitState.CLOSED: 'closed'>
    >>> circuit_after_failures(v, now=t, count=1, failures=3, window_s=10, cooldown_s=5,
    ...                        error="boom").reason
    '3 failures within 10s; last: boom'
    """
    state = circuit_at(view, now, cooldown_s=cooldown_s)
    cutoff = now - timedelta(seconds=window_s)
    recent = (*(t for t in view.recent if t > cutoff), *([now] * min(count, failures)))
    recent = recent[-failures:]
    if state is CircuitState.HALF_OPEN:
        return CircuitView(CircuitState.OPEN, now, recent, f"probe failed: {error}")
    if state is CircuitState.CLOSED and len(recent) >= failures:
        reason = f"{len(recent)} failures within {window_s:g}s; last: {error}"
        return CircuitView(CircuitState.OPEN, now, recent, reason)
    return replace(view, state=state, recent=recent)


def circuit_after_success(view: CircuitView, now: datetime, *, cooldown_s: float) -> CircuitView:
    """A probe succeeded: a half-open circuit closes; any other state stays as it is."""
    if circuit_at(view, now, cooldown_s=cooldown_s) is CircuitState.HALF_OPEN:
        return CircuitView(CircuitState.CLOSED, now, (), "a probe succeeded")
    return view


def check_queue_name(queue: object) -> str:
    """Return `queue` if it is a valid queue name, else raise ValueError saying what is allowed."""
    if not isinstance(queue, str) or not 1 <= len(queue) <= MAX_QUEUE_NAME:
        raise ValueError(f"queue name must be 1-{MAX_QUEUE_NAME} characters, got {queue!r}")
    return queue


def check_schema_name(schema: object) -> str:
    """Return `schema` if it matches ^[a-z_][a-z0-9_]{0,47}$, else raise ValueError."""
    if not isinstance(schema, str) or not SCHEMA_RE.match(schema):
        raise ValueError(
            f"schema must match ^[a-z_][a-z0-9_]{{0,47}}$ (lower case, digits, _), got {schema!r}"
        )
    return schema
