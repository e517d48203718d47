"""The small interface both backends implement. API is not stable: do not implement it yourself.

The worker, the reaper and the public API talk only to these Protocols, which is why
`pgq.Worker(InMemoryBackend(), ...)` needs no special case. Methods are domain verbs; each
takes plain values and returns records from `_records`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from pgq._domain import Lease, Outcome
from pgq._records import ClaimedJob, Enqueued, JobRecord, NewJob


class Listener(Protocol):
    """Wakes an idle worker when jobs arrive. Polling stays the fallback: it may miss wake-ups."""

    def wait(self, timeout_s: float) -> set[str]:
        """Block up to `timeout_s`; the queues that got runnable jobs meanwhile (empty if none
        were announced)."""
        ...

    def close(self) -> None: ...


class Backend(Protocol):
    """Storage as the worker and the API need it.

    Methods that change a running job take its Lease and change nothing when that lease is
    gone: the late result is recorded as a `discarded` event instead.
    """

    def enqueue_many(self, jobs: Sequence[NewJob]) -> list[Enqueued]:
        """Write jobs (in the caller's transaction, where the backend has one); input order."""
        ...

    def claim(
        self,
        *,
        worker_id: str,
        wants: Sequence[tuple[str, int]],
        lease_s: float,
        max_attempts: Mapping[str, int] | None = None,
    ) -> list[ClaimedJob]:
        """Claim up to n runnable jobs of each (queue, n), under leases of `lease_s` seconds.

        `max_attempts` maps task names to their own setting: a job enqueued without one gets
        its task's stamped at claim, so the reaper (which knows no tasks) applies it too.
        """
        ...

    def extend_leases(self, leases: Sequence[Lease], *, lease_s: float) -> set[Lease]:
        """Extend the leases still held; return those (the others were lost)."""
        ...

    def complete_many(self, leases: Sequence[Lease]) -> set[Lease]:
        """Mark jobs completed; return the leases that were still held."""
        ...

    def fail(self, lease: Lease, outcome: Outcome, *, error: str) -> bool:
        """Record a failed attempt as `outcome` decides; False if the lease was lost."""
        ...

    def release(self, leases: Sequence[Lease]) -> int:
        """Hand back claimed jobs that never started: to `queued`, the attempt not counted."""
        ...

    def reap_expired(self, *, limit: int, default_max_attempts: int) -> int:
        """Take back running jobs whose lease expired; return how many."""
        ...

    def get_job(self, job_id: int) -> JobRecord | None: ...

    def list_jobs(self, *, queue: str | None, state: str | None, limit: int) -> list[JobRecord]: ...

    def retry_job(self, job_id: int) -> JobRecord:
        """Replay a dead or cancelled job; JobNotFound / InvalidTransition otherwise."""
        ...

    def cancel_job(self, job_id: int) -> JobRecord:
        """Cancel a queued or retrying job; JobNotFound / InvalidTransition otherwise."""
        ...

    def runnable_queues(self) -> list[str]:
        """Queues that hold runnable jobs, due now or later."""
        ...

    def next_due_in(self, queues: Sequence[str]) -> float | None:
        """Seconds until the earliest runnable job of `queues` (<= 0: due), None if none."""
        ...

    def register_worker(
        self,
        worker_id: str,
        *,
        hostname: str,
        pid: int,
        queues: Sequence[str] | None,
        concurrency: int,
    ) -> None: ...

    def worker_heartbeat(self, worker_id: str) -> None: ...

    def deregister_worker(self, worker_id: str) -> None: ...

    def listener(self) -> Listener: ...

    def close(self) -> None: ...
