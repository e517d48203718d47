"""The `pgq-listener` thread: waits on LISTEN and wakes the claim loop. NOTIFY only wakes
workers; polling stays the fallback (a pooler may swallow notifications)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from pgq._backends.ports import Listener

logger = logging.getLogger("pgq.worker")


def listen_loop(
    listener: Listener, halt: threading.Event, on_notified: Callable[[set[str]], None]
) -> None:
    try:
        while not halt.is_set():
            try:
                queues = listener.wait(0.1)  # short waits: shutdown is noticed promptly
            except Exception as exc:
                logger.warning("listener failed", extra={"error": str(exc)})
                halt.wait(1.0)
                continue
            if queues:
                on_notified(queues)
    finally:
        listener.close()
