"""Retrying database calls: a failed call in a loop logs a warning, backs off and tries again,
so a lost connection delays jobs and never drops them."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import TypeVar

from pgq._core.errors import DatabaseError

logger = logging.getLogger("pgq.worker")

T = TypeVar("T")


class GaveUp(Exception):
    """A database call kept failing until its deadline."""


def backoff_s(failures: int) -> float:
    """Reconnect pacing: 0.1 s doubling to 10 s."""
    return float(min(10.0, 0.1 * 2.0 ** min(failures - 1, 10)))


def log_retry(what: str, exc: DatabaseError, worker_id: str, delay_s: float) -> None:
    logger.warning(
        f"{what} failed; retrying",
        extra={"worker_id": worker_id, "error": str(exc), "retry_in_s": delay_s},
    )


def retry_until(deadline: float, what: str, worker_id: str, fn: Callable[[], T]) -> T:
    """Call `fn`, retrying database errors with backoff; GaveUp once `deadline` (a
    time.monotonic() value) has passed."""
    failures = 0
    while True:
        try:
            return fn()
        except DatabaseError as exc:
            failures += 1
            if time.monotonic() >= deadline:
                raise GaveUp(what) from exc
            delay = backoff_s(failures)
            log_retry(what, exc, worker_id, delay)
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))


def retry_forever(what: str, worker_id: str, fn: Callable[[], T]) -> T:
    return retry_until(math.inf, what, worker_id, fn)


def safely(what: str, worker_id: str, fn: Callable[[], object]) -> bool:
    """Run `fn` once; on a database error log it (the caller tries again later)."""
    try:
        fn()
    except DatabaseError as exc:
        logger.warning(
            f"{what} failed; will retry", extra={"worker_id": worker_id, "error": str(exc)}
        )
        return False
    return True
