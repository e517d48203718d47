"""Tasks the test suite enqueues. Workers in subprocesses import this module as tests.tasks."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pgq


@pgq.task
def noop() -> None:
    pass


@pgq.task
def add(a: int, b: int) -> int:
    return a + b


@pgq.task(queue="emails", max_attempts=3)
def send_email(to: str, subject: str = "hi") -> None:
    pass


@pgq.task(max_attempts=3, backoff=pgq.Backoff(base=0.0, cap=0.0))
def always_fails() -> None:
    raise RuntimeError("downstream is down")


@pgq.task(max_attempts=5, backoff=pgq.Backoff(base=0.0, cap=0.0))
def fails_until(attempt: int, ctx: pgq.Context) -> None:
    if ctx.attempt < attempt:
        raise ConnectionError(f"attempt {ctx.attempt} failed")


@pgq.task(max_attempts=5)
def gives_up() -> None:
    raise pgq.Fail("the order no longer exists")


@pgq.task(max_attempts=5)
def retries_later(delay: float, ctx: pgq.Context) -> None:
    if ctx.attempt == 1:
        raise pgq.Retry(delay=delay)


@pgq.task
def with_kwargs(a: int, **rest: Any) -> None:
    pass


@pgq.task
def uses_ctx(ctx: pgq.Context) -> None:
    if ctx.job_id <= 0 or ctx.attempt < 1:
        raise AssertionError(ctx)


@pgq.task(timeout=0.3, max_attempts=2, backoff=pgq.Backoff(base=0.0, cap=0.0))
def too_slow() -> None:
    time.sleep(1.5)


@pgq.task(max_attempts=10)
def sleep_and_record(seconds: float, marker_dir: str, ctx: pgq.Context) -> None:
    """Writes a file per attempt start and per finish, so tests see what really ran."""
    Path(marker_dir, f"start-{ctx.job_id}-{ctx.attempt}-{os.getpid()}").touch()
    time.sleep(seconds)
    Path(marker_dir, f"done-{ctx.job_id}-{ctx.attempt}-{os.getpid()}").touch()


@pgq.task(max_attempts=10)
def record(marker_dir: str, ctx: pgq.Context) -> None:
    Path(marker_dir, f"done-{ctx.job_id}-{ctx.attempt}-{os.getpid()}").touch()


@pgq.task
async def async_noop(x: int) -> None:
    if x < 0:
        raise ValueError("negative")


@pgq.task(queue="capped", max_attempts=10)
def timed(seconds: float, marker_dir: str, ctx: pgq.Context) -> None:
    """Writes `span-<job>-<attempt>-<pid>` holding its start and end (time.monotonic(), one
    clock for every process on the host), so tests can see how many ran at once."""
    start = time.monotonic()
    time.sleep(seconds)
    Path(marker_dir, f"span-{ctx.job_id}-{ctx.attempt}-{os.getpid()}").write_text(
        f"{start} {time.monotonic()}"
    )


# Whether the "downstream" that `depends_on_downstream` calls answers; tests flip it.
DOWNSTREAM = {"up": False}


@pgq.task(queue="flaky", max_attempts=20, backoff=pgq.Backoff(base=0.0, cap=0.0))
def depends_on_downstream() -> None:
    if not DOWNSTREAM["up"]:
        raise ConnectionError("downstream refused the connection")


@pgq.task(queue="flaky", max_attempts=20)
def downstream_down() -> None:
    raise ConnectionError("downstream refused the connection")


@pgq.task
def queue_settings_apply() -> None:
    """No retry settings of its own: its queue's (or the defaults) apply."""
    raise RuntimeError("fails every time")


@pgq.task
def sleeps_past_queue_timeout() -> None:
    time.sleep(1.0)


@pgq.task(queue="sick")
def times_out() -> None:
    raise TimeoutError("downstream timed out")
