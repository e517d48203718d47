"""Helpers for testing applications that use pgq, without PostgreSQL.

```python
from pgq.testing import InMemoryBackend, assert_enqueued

backend = InMemoryBackend()
pgq.enqueue(backend, send_email, {"to": "a@b.c", "subject": "hi"})
assert_enqueued(backend, send_email, args={"to": "a@b.c", "subject": "hi"})
backend.run_until_empty(tasks=["myapp.tasks"])
```
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pgq._backends.clock import Clock, FrozenClock
from pgq._backends.memory import MemoryBackend
from pgq._core.records import JobRecord
from pgq._core.tasks import Task
from pgq._worker import inline

__all__ = ["Clock", "FrozenClock", "InMemoryBackend", "assert_enqueued", "run_until_empty"]

_UNSET: Any = object()


class InMemoryBackend(MemoryBackend):
    """A pgq backend held in memory, for tests: pass it wherever pgq takes a connection or DSN
    (`pgq.enqueue`, `pgq.get_job`, `pgq.Worker`, ...). Same states, transitions, retry rules
    and queue policies as PostgreSQL: both run one contract suite.

    `clock` plays the database's now(); by default it ticks with wall time and `clock.advance()`
    moves it ahead. Use `FrozenClock()` for a clock that only moves when told.
    """

    def run_until_empty(
        self, *, tasks: Iterable[str | Task[..., Any]], max_runs: int = 100_000
    ) -> int:
        """Run every job, retries included, to a terminal state, in this thread; return how
        many attempts ran. Instead of sleeping, the clock jumps to the next due job.

        A job whose task is not among `tasks` fails its attempts as a worker would fail them;
        outcomes are written by the worker's own result writer (`pgq._worker.inline`).
        """
        return inline.run_until_empty(self, tasks=tasks, max_runs=max_runs)


def assert_enqueued(
    backend: InMemoryBackend,
    task: Task[..., Any] | str,
    *,
    args: dict[str, Any] | None = _UNSET,
    queue: str | None = None,
    state: str | None = None,
    count: int | None = None,
) -> list[JobRecord]:
    """Assert that jobs of `task` were enqueued (optionally with exactly these args, in this
    queue, in this state, `count` times); return the matching jobs.

    Raises AssertionError listing what was enqueued when nothing matches.
    """
    name = task if isinstance(task, str) else task.name
    jobs = backend.jobs()
    matching = [
        j
        for j in jobs
        if j.task == name
        and (args is _UNSET or j.args == (args or {}))
        and (queue is None or j.queue == queue)
        and (state is None or j.state == state)
    ]
    wanted = f"{name}" + ("" if args is _UNSET else f" with args {args!r}")
    wanted += "" if queue is None else f" in queue {queue!r}"
    wanted += "" if state is None else f" in state {state!r}"
    if not matching or (count is not None and len(matching) != count):
        listing = (
            "\n".join(
                f"  #{j.id} {j.task} queue={j.queue!r} state={j.state} args={j.args!r}"
                for j in jobs
            )
            or "  (nothing)"
        )
        found = f"{len(matching)} such jobs" if count is not None else "no such job"
        expected = f"expected {count} " if count is not None else "expected "
        raise AssertionError(f"{expected}job(s) of {wanted}; found {found}. Enqueued:\n{listing}")
    return matching


def run_until_empty(
    backend: InMemoryBackend, *, tasks: Iterable[str | Task[..., Any]], max_runs: int = 100_000
) -> int:
    """Run every runnable job, retries included, to a terminal state (same as
    `backend.run_until_empty`)."""
    return backend.run_until_empty(tasks=tasks, max_runs=max_runs)
