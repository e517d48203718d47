"""The `harness` fixture: the same contract tests against the in-memory and PostgreSQL backends."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest

import pgq
from pgq._backends.ports import Backend
from pgq._core.records import NewJob
from pgq.testing import InMemoryBackend
from tests.postgres import PgSchema


@dataclass
class Harness:
    kind: str
    backend: Backend
    target: object  # what the public API functions are given
    worker_target: Any  # what pgq.Worker is given
    api: dict[str, Any] = field(default_factory=dict)  # extra keyword arguments (schema)
    pg: PgSchema | None = None

    def enqueue(self, task: Any, args: dict[str, Any] | None = None, **kw: Any) -> pgq.Enqueued:
        return pgq.enqueue(self.target, task, args, **kw, **self.api)

    def enqueue_raw(self, task: str, args_json: str, queue: str = "default") -> int:
        """Write a job as another producer might, bypassing pgq's checks."""
        job = NewJob(
            queue=queue,
            task=task,
            args_json=args_json,
            priority=0,
            run_at=None,
            delay_s=0.0,
            idempotency_key=None,
            max_attempts=None,
        )
        [written] = self.backend.enqueue_many([job])
        return written.id

    def get(self, job_id: int) -> pgq.JobRecord:
        record = pgq.get_job(self.target, job_id, **self.api)
        assert record is not None, f"job {job_id} is missing"
        return record

    def expire_lease(self, job_id: int) -> None:
        if isinstance(self.backend, InMemoryBackend):
            self.backend.expire_lease(job_id)
        else:
            assert self.pg is not None
            self.pg.sql(
                "update {schema}.jobs set lease_expires_at = now() - interval '1 ms' "
                "where id = %s and state = 'running'",
                [job_id],
            )

    def age_finished(self, job_id: int, seconds: float) -> None:
        """Make a finished job `seconds` older, as time passing would (its retention counts
        from finished_at)."""
        if isinstance(self.backend, InMemoryBackend):
            self.backend.clock.advance(seconds)
        else:
            assert self.pg is not None
            self.pg.sql(
                "update {schema}.jobs set finished_at = finished_at - make_interval(secs => %s)"
                " where id = %s",
                [seconds, job_id],
            )

    def make_due(self, job_id: int) -> None:
        """Bring a delayed or backed-off job's run_at to now, as time passing would."""
        if isinstance(self.backend, InMemoryBackend):
            run_at = self.get(job_id).run_at
            self.backend.clock.advance_to(run_at + timedelta(microseconds=1))
        else:
            assert self.pg is not None
            self.pg.sql("update {schema}.jobs set run_at = now() where id = %s", [job_id])

    def worker(self, **kw: Any) -> pgq.Worker:
        kw.setdefault("tasks", ["tests.tasks"])
        kw.setdefault("poll_interval", 0.1)
        if self.pg is not None:
            kw.setdefault("schema", self.pg.schema)
        return pgq.Worker(self.worker_target, **kw)


@pytest.fixture(params=["memory", "postgres"])
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    if request.param == "memory":
        backend = InMemoryBackend()
        yield Harness("memory", backend, backend, backend)
        return
    pg: PgSchema = request.getfixturevalue("pg_schema")
    backend_pg = pg.new_backend()
    try:
        yield Harness("postgres", backend_pg, pg.dsn, pg.dsn, {"schema": pg.schema}, pg)
    finally:
        backend_pg.close()
