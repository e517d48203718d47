"""Tasks for the benchmarks: a no-op, and one that stamps when its body starts.

Workers load them as ``benchmarks.pgq_tasks`` (run from the repository root). ``stamp`` appends
``"<i> <time.time()>"`` to the file named by ``$BENCH_STAMP_FILE`` with one ``write(2)``, the
same method the peers' drivers use.
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


@pgq.task(queue="default")
def stamp(i: int) -> None:
    now = time.time()
    if _fd >= 0:
        os.write(_fd, f"{i} {now!r}\n".encode())
