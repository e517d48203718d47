"""Maintenance: the periodic duties of a worker, run one after another by the `pgq-maintenance`
thread. Each duty is a file of its own; adding one (periodic jobs, metric gauges) is adding a
file and a line in `Worker._duties`, without touching the others.

A duty's `run` may raise DatabaseError: the runner logs it and tries the duty again after
`retry_s` (or its interval, if shorter), so a lost connection never stops maintenance.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Sequence
from typing import Protocol

from pgq._worker.retrying import safely


class Duty(Protocol):
    name: str  # for the log: "heartbeat failed; will retry"
    every_s: float  # seconds between runs
    first_s: float  # seconds after start before the first run

    def run(self, now: float) -> None:
        """Do the duty once; `now` is time.monotonic()."""
        ...


def maintain(
    duties: Sequence[Duty], halt: threading.Event, *, worker_id: str, retry_s: float = 1.0
) -> None:
    """The `pgq-maintenance` thread's loop: each duty when it is due, until `halt`."""
    start = time.monotonic()
    due = [start + d.first_s for d in duties]
    tick = max(0.01, min(0.25, *(d.every_s for d in duties))) if duties else 0.25
    while not halt.wait(tick):
        now = time.monotonic()
        for i, duty in enumerate(duties):
            if now < due[i]:
                continue
            ok = safely(duty.name, worker_id, functools.partial(duty.run, now))
            due[i] = time.monotonic() + (duty.every_s if ok else min(duty.every_s, retry_s))
            if halt.is_set():
                return
