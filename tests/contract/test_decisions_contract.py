"""The decisions of _core.decisions, one table of cases each, given to both backends and to the
pure function itself: the in-memory backend calls the function, the PostgreSQL backend decides
in its statements (whose comments name the function). Issue #9: each rule decided once."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest

import pgq
from pgq._core.decisions import Allowance, claim_allowance, first_set, retention_s
from pgq._core.domain import CircuitState, State, after_lease_expired
from tests import tasks
from tests.contract.conftest import Harness


@dataclass(frozen=True)
class ClaimCase:
    name: str
    policy: pgq.Queue | None
    wanted: int
    expected: Allowance
    running: int = 0  # jobs of the queue another worker holds first
    started: int = 0  # of those, how many count as recent starts (rate)
    circuit: CircuitState = CircuitState.CLOSED
    paused: bool = False


CIRCUIT = pgq.Circuit(failures=1, window=60.0, cooldown=300.0)
HALF_OPEN = pgq.Circuit(failures=1, window=60.0, cooldown=0.0, probes=2)

CLAIM_CASES = [
    ClaimCase("no policy: what was asked", None, 3, expected=Allowance(3)),
    ClaimCase("paused: nothing", pgq.Queue("q"), 3, paused=True, expected=Allowance(0)),
    ClaimCase("cap with room", pgq.Queue("q", concurrency=2), 5, running=1, expected=Allowance(1)),
    ClaimCase("cap full", pgq.Queue("q", concurrency=2), 5, running=2, expected=Allowance(0)),
    ClaimCase(
        "rate with room",
        pgq.Queue("q", rate=pgq.Rate(3, per=60.0)),
        5,
        running=2,
        started=2,
        expected=Allowance(1),
    ),
    ClaimCase(
        "rate used up",
        pgq.Queue("q", rate=pgq.Rate(2, per=60.0)),
        5,
        running=2,
        started=2,
        expected=Allowance(0),
    ),
    ClaimCase(
        "cap and rate: the tighter one",
        pgq.Queue("q", concurrency=5, rate=pgq.Rate(2, per=60.0)),
        5,
        expected=Allowance(2),
    ),
    ClaimCase(
        "circuit open",
        pgq.Queue("q", circuit=CIRCUIT),
        5,
        circuit=CircuitState.OPEN,
        expected=Allowance(0),
    ),
    ClaimCase(
        "circuit half-open: probes only",
        pgq.Queue("q", circuit=HALF_OPEN),
        5,
        circuit=CircuitState.HALF_OPEN,
        expected=Allowance(2, probe=True),
    ),
]


@pytest.mark.parametrize("case", CLAIM_CASES, ids=lambda c: c.name)
def test_claim_allowance_the_function(case: ClaimCase) -> None:
    got = claim_allowance(
        case.wanted,
        case.policy,
        paused=case.paused,
        circuit=case.circuit,
        running=case.running,
        recent_starts=case.started,
    )
    assert got == case.expected


@pytest.mark.parametrize("case", CLAIM_CASES, ids=lambda c: c.name)
def test_claim_allowance_on_the_backend(harness: Harness, case: ClaimCase) -> None:
    backend = harness.backend
    for _ in range(case.running + 10):
        harness.enqueue(tasks.noop, queue="q")
    if case.policy is not None:
        backend.write_policies([case.policy], worker_id="w0")
    if case.running:
        held = backend.claim(worker_id="other", wants=[("q", case.running)], lease_s=60.0)
        assert len(held) == case.running
    if case.circuit is not CircuitState.CLOSED:
        backend.record_circuit_failures("q", count=1, error="boom", worker_id="w0")
        backend.advance_circuits()  # a cooldown of 0 s is over at once: half-open
    if case.paused:
        pgq.pause_queue(harness.target, "q", **harness.api)
    got = backend.claim(worker_id="w1", wants=[("q", case.wanted)], lease_s=60.0)
    assert len(got) == case.expected.limit
    assert all(job.probe is case.expected.probe for job in got)


@dataclass(frozen=True)
class ReapCase:
    name: str
    job_max: int | None
    queue_max: int | None
    attempts: int  # claims (each reaped) before the one checked
    expected: State


REAP_CASES = [
    ReapCase("the job's own setting, last attempt", 1, None, 1, State.DEAD),
    ReapCase("the queue's setting, attempts left", None, 2, 1, State.RETRYING),
    ReapCase("the queue's setting, last attempt", None, 2, 2, State.DEAD),
    ReapCase("the job's setting beats the queue's", 3, 1, 1, State.RETRYING),
    ReapCase("the default (5)", None, None, 1, State.RETRYING),
]

LEASE_EXPIRED = re.compile(
    r"lease expired: worker w1 last seen "
    r"(never \(worker gone\)|\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z), "
    r"lease ran out at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
)


@pytest.mark.parametrize("case", REAP_CASES, ids=lambda c: c.name)
def test_the_reapers_verdict_on_the_backend(harness: Harness, case: ReapCase) -> None:
    backend = harness.backend
    job = harness.enqueue(tasks.noop, queue="q", max_attempts=case.job_max)
    if case.queue_max is not None:
        backend.write_policies([pgq.Queue("q", max_attempts=case.queue_max)], worker_id="w0")
    for _ in range(case.attempts):
        harness.make_due(job.id)
        [claimed] = backend.claim(worker_id="w1", wants=[("q", 1)], lease_s=60.0)
        harness.expire_lease(claimed.id)
        assert backend.reap_expired(limit=10, default_max_attempts=5) == {"q": 1}
    record = harness.get(job.id)
    max_attempts = first_set(case.job_max, case.queue_max, default=5)
    assert after_lease_expired(attempt=case.attempts, max_attempts=max_attempts) is case.expected
    assert record.state == case.expected
    assert record.last_error is not None and LEASE_EXPIRED.fullmatch(record.last_error)


@dataclass(frozen=True)
class RetentionCase:
    name: str
    task: pgq.Task[..., object]
    retention: pgq.Retention | None
    age_s: float
    kept: bool


RETENTION_CASES = [
    RetentionCase("completed, default 1 day, younger", tasks.noop, None, 3600.0, True),
    RetentionCase("completed, default 1 day, older", tasks.noop, None, 90_000.0, False),
    RetentionCase("dead, default 14 days, 2 days old", tasks.gives_up, None, 172_800.0, True),
    RetentionCase(
        "completed, kept 60 s, 2 min old", tasks.noop, pgq.Retention(completed=60.0), 120.0, False
    ),
    RetentionCase(
        "dead, kept 60 s, 2 min old", tasks.gives_up, pgq.Retention(dead=60.0), 120.0, False
    ),
]


@pytest.mark.parametrize("case", RETENTION_CASES, ids=lambda c: c.name)
def test_retention_on_the_backend(harness: Harness, case: RetentionCase) -> None:
    if case.retention is not None:
        policy = pgq.Queue("default", retention=case.retention)
        harness.backend.write_policies([policy], worker_id="w0")
    job = harness.enqueue(case.task)
    harness.worker().run_until_empty(max_wait=0.2)
    state = State(harness.get(job.id).state)
    keep_s = retention_s(state, case.retention)
    assert keep_s is not None
    assert (case.age_s <= keep_s) is case.kept  # the table agrees with the function
    harness.age_finished(job.id, case.age_s)
    harness.backend.prune_finished(limit=100)
    assert (pgq.get_job(harness.target, job.id, **harness.api) is not None) is case.kept
