"""Tasks for ``benchmarks/policies.py`` (queue policies, many queues, fairness).

Workers load them as ``benchmarks.policy_tasks`` (run from the repository root).

- ``noop``: does nothing; the drains enqueue it into whichever queue they measure.
- ``flood``: sleeps 1 ms, so a flood keeps the task threads busy with real (GIL-releasing) work.
- ``quiet``: the quiet queue's job; appends ``"<i> <time.time()>"`` to ``$BENCH_STAMP_FILE``
  with one ``write(2)`` when its body starts (the same method as ``pgq_tasks.stamp``), so the
  report can say whether a quiet job waited in the database or inside the worker.
"""

from __future__ import annotations

import os
import time

import pgq

_path = os.environ.get("BENCH_STAMP_FILE")
_fd = os.open(_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if _path else -1


@pgq.task(queue="default")
def noop() -> None:
    pass


@pgq.task(queue="flood")
def flood() -> None:
    time.sleep(0.001)


@pgq.task(queue="quiet")
def quiet(i: int) -> None:
    now = time.time()
    if _fd >= 0:
        os.write(_fd, f"{i} {now!r}\n".encode())
