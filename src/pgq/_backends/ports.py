"""The small interface both backends implement. API is not stable: do not implement it yourself.

The worker, the reaper and the public API talk only to these Protocols, which is why
`pgq.Worker(InMemoryBackend(), ...)` needs no special case. Methods are domain verbs; each
takes plain values and returns records from `_records`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from pgq._core.domain import Lease, Outcome
from pgq._core.policy import Queue
from pgq._core.records import ClaimedJob, Enqueued, JobRecord, NewJob, QueueInfo


class Listener(Protocol):
    """Wakes an idle worker when jobs arrive. Polling stays the fallback: it may miss wake-ups."""

    def wait(self, timeout_s: float) -> set[str]:
        """Block up to `timeout_s`; the queues that got runnable jobs meanwhile (empty if none
        were announced)."""
        ...

    def interrupt(self) -> None:
        """End a wait in progress at once, and every later one (thread-safe): the worker's
        run is ending."""
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

        Each queue's policy limits what it gives: nothing while paused or while its circuit is
        open; no more than its concurrency cap, its rate limit, or (half-open) its probes
        allow, counted exactly across every worker. How is the backend's business (the
        PostgreSQL backend picks its statement from the policy rows it last read).

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

    def reap_expired(self, *, limit: int, default_max_attempts: int) -> dict[str, int]:
        """Take back running jobs whose lease expired; return how many, per queue. A queue's
        policy max_attempts applies to jobs that carry none of their own."""
        ...

    # -- queue policies ----------------------------------------------------------------------

    def write_policies(
        self, policies: Sequence[Queue], *, worker_id: str, live_only: bool = False
    ) -> None:
        """Store queue policies (all their settings, or with `live_only` just the ones a reload
        applies). `paused` is written only when it is not None."""
        ...

    def read_policies(self) -> dict[str, Queue]:
        """Every stored queue policy, by queue name."""
        ...

    def set_paused(self, queue: str, paused: bool, *, by: str) -> bool:
        """Pause or resume a queue (creating its policy row if needed); False if unchanged."""
        ...

    def record_circuit_failures(
        self, queue: str, *, count: int, error: str, worker_id: str
    ) -> str | None:
        """Count failures toward the queue's circuit; the new state if it changed."""
        ...

    def record_probe_success(self, queue: str, *, worker_id: str) -> bool:
        """A half-open circuit's probe succeeded: close it; False if it was not half-open."""
        ...

    def advance_circuits(self) -> int:
        """Record open circuits whose cooldown passed as half-open; return how many."""
        ...

    def prune_finished(self, *, limit: int) -> int:
        """Delete up to `limit` finished jobs (and their events) past their queue's retention."""
        ...

    def list_queues(self) -> list[QueueInfo]:
        """Every queue that has jobs or a policy, by name."""
        ...

    def report_restart_required(self, worker_id: str, changes: Sequence[str]) -> None:
        """Record what a worker refused to apply from a reloaded config (empty: nothing)."""
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
