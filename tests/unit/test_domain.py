from __future__ import annotations

import doctest

import pytest

import pgq
from pgq._core import domain as _domain
from pgq._core import tasks as _tasks
from pgq._core.domain import (
    TRANSITIONS,
    Backoff,
    GiveUp,
    RetryIn,
    State,
    after_failure,
    after_lease_expired,
)


@pytest.mark.parametrize("module", [_domain, _tasks])
def test_doctests(module: object) -> None:
    failures, tried = doctest.testmod(module, optionflags=doctest.ELLIPSIS)  # type: ignore[arg-type]
    assert tried > 0
    assert failures == 0


def test_state_table_matches_design() -> None:
    assert TRANSITIONS[State.COMPLETED] == frozenset()
    assert TRANSITIONS[State.RUNNING] == {State.COMPLETED, State.RETRYING, State.DEAD, State.QUEUED}
    assert {s for s, tos in TRANSITIONS.items() if State.CANCELLED in tos} == {
        State.QUEUED,
        State.RETRYING,
    }
    assert set(TRANSITIONS) == set(State)


def test_backoff_is_full_jitter_and_capped() -> None:
    b = Backoff(base=1.0, cap=10.0)
    assert b.delay_s(1, rand=lambda: 1.0) == 1.0
    assert b.delay_s(3, rand=lambda: 1.0) == 4.0
    assert b.delay_s(10, rand=lambda: 1.0) == 10.0
    assert b.delay_s(10**9, rand=lambda: 1.0) == 10.0  # no overflow
    assert b.delay_s(3, rand=lambda: 0.0) == 0.0
    samples = {Backoff().delay_s(4) for _ in range(50)}
    assert len(samples) > 40 and all(0 <= s <= 8 for s in samples)
    with pytest.raises(ValueError, match="base"):
        Backoff(base=-1)


def test_after_failure_rules() -> None:
    b = Backoff(base=2.0, cap=100.0)
    assert after_failure(
        attempt=1, max_attempts=3, backoff=b, error=ValueError("x"), rand=lambda: 0.5
    ) == RetryIn(1.0)
    assert after_failure(
        attempt=2, max_attempts=3, backoff=b, error=pgq.Retry(delay=9), rand=lambda: 0.5
    ) == RetryIn(9)
    assert after_failure(
        attempt=2, max_attempts=3, backoff=b, error=pgq.Retry(), rand=lambda: 0.5
    ) == RetryIn(2.0)
    # Retry still counts: on the last attempt it is dead
    assert isinstance(
        after_failure(attempt=3, max_attempts=3, backoff=b, error=pgq.Retry(delay=1)), GiveUp
    )
    assert after_failure(attempt=1, max_attempts=3, backoff=b, error=pgq.Fail("why")) == GiveUp(
        "pgq.Fail: why"
    )


def test_after_lease_expired() -> None:
    assert after_lease_expired(attempt=1, max_attempts=2) is State.RETRYING
    assert after_lease_expired(attempt=2, max_attempts=2) is State.DEAD


def test_retry_rejects_negative_delay() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        pgq.Retry(delay=-1)


def test_error_hierarchy() -> None:
    assert issubclass(pgq.EnqueueError, ValueError) and issubclass(pgq.EnqueueError, pgq.PgqError)
    assert issubclass(pgq.ConfigError, ValueError)
    assert issubclass(pgq.TaskNotFound, LookupError) and issubclass(pgq.JobNotFound, LookupError)
    assert not issubclass(pgq.Retry, pgq.PgqError) and not issubclass(pgq.Fail, pgq.PgqError)
