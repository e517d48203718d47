"""Settings shared by the CLI: where the database is, and how logs look."""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal

_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


class _TextFormatter(logging.Formatter):
    """`time level logger: message key=value ...`: the fixed phrase first, values after."""

    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        extras = " ".join(
            f"{k}={v}" for k, v in record.__dict__.items() if k not in _STANDARD and v is not None
        )
        return f"{base} {extras}" if extras else base


def setup_logging(level: str = "INFO", fmt: Literal["text", "json"] = "text") -> None:
    """Send pgq's logs to stderr as text or JSON lines. The library itself adds no handlers."""
    handler = logging.StreamHandler(sys.stderr)
    formatter: Any
    if fmt == "json":
        from pythonjsonlogger.json import JsonFormatter

        formatter = JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "name": "logger"},
        )
    else:
        formatter = _TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler.setFormatter(formatter)
    root = logging.getLogger("pgq")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
