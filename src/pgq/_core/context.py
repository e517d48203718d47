"""What a running task may know about its job: `pgq.Context`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Context:
    """Passed to a task that declares a parameter annotated `pgq.Context`; never stored in args."""

    job_id: int
    attempt: int
    queue: str
    task: str
    worker_id: str
    max_attempts: int
