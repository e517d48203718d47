"""Queue policies: what users declare (`pgq.Queue`, `pgq.Rate`, `pgq.Circuit`, `pgq.Retention`),
validated with pydantic, from code or from a `pgq.toml` file, and how a reloaded file differs.

Every class here is a frozen pydantic dataclass: `pgq.Queue("emails", concurrency=5)` checks its
values when built (a `ValueError` naming the field), and the file loader builds the same classes
from TOML, so code and file share one set of rules. A file that does not validate raises
`ConfigError` naming the key (`queues.emails.concurrency`) and the reason.
"""

from __future__ import annotations

import importlib
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Final, NamedTuple

import pydantic
from pydantic import ConfigDict, Field, StrictBool, StrictFloat, StrictInt, field_validator
from pydantic.dataclasses import dataclass

from pgq._core.domain import (
    Backoff,
    CircuitState,
    CircuitView,
    check_queue_name,
    circuit_after_failures,
    circuit_after_success,
    circuit_as_of,
)
from pgq._core.errors import ConfigError, Fail, Retry

_STRICT = ConfigDict(extra="forbid")

Count = Annotated[StrictInt, Field(gt=0)]
Seconds = Annotated[StrictFloat, Field(gt=0, allow_inf_nan=False)]
SecondsOrZero = Annotated[StrictFloat, Field(ge=0, allow_inf_nan=False)]

DEFAULT_RETENTION_COMPLETED_S: Final = 86_400.0
DEFAULT_RETENTION_DEAD_S: Final = 14 * 86_400.0


@dataclass(frozen=True, slots=True, config=_STRICT)
class Rate:
    """At most `limit` job starts per `per` seconds, across every worker.

    Jobs over the limit wait (they do not fail and use no attempt). The limit holds in every
    window of `per` seconds; claims count starts in buckets of per/20, so a queue kept at its
    limit starts about `limit` jobs per 1.05 x `per` seconds.
    """

    limit: Count
    per: Seconds = 1.0


@dataclass(frozen=True, slots=True, config=_STRICT)
class Circuit:
    """A circuit breaker shared by every worker of the queue, through the database.

    After `failures` counted failures within `window` seconds the circuit opens: no worker
    claims from the queue (no attempt is used). After `cooldown` seconds it is half-open: at most
    `probes` jobs run at once; a probe that succeeds closes it, any counted failure reopens it.

    `on` says which failures count: exception classes, or their dotted names (as in TOML). By
    default (None) every exception but `pgq.Fail` and `pgq.Retry` counts, and so does a lease
    lost to the reaper; an unknown task or an undecodable payload never counts.
    """

    failures: Count = 5
    window: Seconds = 30.0
    cooldown: SecondsOrZero = 60.0
    probes: Count = 1
    on: tuple[type[BaseException], ...] | None = None

    @field_validator("on", mode="before")
    @classmethod
    def _import_names(cls, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, str | type):
            value = [value]
        return tuple(_import_exception(i) if isinstance(i, str) else i for i in value)

    def counts(self, error: type[BaseException] | None) -> bool:
        """Whether a failure of this kind counts toward opening the circuit (None: a lease lost
        to the reaper)."""
        if error is not None and issubclass(error, Fail | Retry):
            return False
        if self.on is None:
            return True
        return error is not None and issubclass(error, self.on)

    @property
    def on_names(self) -> list[str] | None:
        """`on` as dotted names, as the database and `pgq queues` show them."""
        if self.on is None:
            return None
        return [f"{c.__module__}.{c.__qualname__}".removeprefix("builtins.") for c in self.on]


@dataclass(frozen=True, slots=True, config=_STRICT)
class Retention:
    """How long finished jobs (and their events) are kept, in seconds: completed jobs 1 day and
    dead (or cancelled) jobs 14 days by default. Pruned in small batches by every worker."""

    completed: SecondsOrZero = DEFAULT_RETENTION_COMPLETED_S
    dead: SecondsOrZero = DEFAULT_RETENTION_DEAD_S


@dataclass(frozen=True, slots=True, config=_STRICT)
class Queue:
    """A queue's policy. Every field but `name` is optional; None means "no limit" for
    `concurrency`, `rate` and `circuit`, and "the default" for the rest.

    Args:
        name: the queue (1-63 characters).
        concurrency: at most this many of its jobs run at once, across every worker and host.
        rate: a `pgq.Rate`: at most `limit` job starts per `per` seconds, across every worker.
        circuit: a `pgq.Circuit` breaker, shared by every worker.
        max_attempts, backoff, timeout: retry and time limits for its jobs; a task's own
            settings win over these, and what a job was enqueued with wins over both.
        retention: a `pgq.Retention`: how long completed and dead jobs are kept.
        paused: True pauses the queue when the worker starts (or the file changes it); None
            leaves the flag as `pgq queues pause/resume` set it.

    Hot reload (`config=` file): max_attempts, backoff, rate, retention and paused apply to a
    running worker; concurrency, timeout, circuit and the set of queues need a restart.

    Example:
        >>> pgq.Queue("emails", concurrency=5, rate=pgq.Rate(100, per=1.0))  # doctest: +SKIP
    """

    name: str
    concurrency: Count | None = None
    rate: Rate | None = None
    circuit: Circuit | None = None
    max_attempts: Count | None = None
    backoff: Backoff | None = None
    timeout: Seconds | None = None
    retention: Retention | None = None
    paused: StrictBool | None = None

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        return check_queue_name(value)

    @property
    def effective_retention(self) -> Retention:
        return self.retention or Retention()


CircuitMove = Callable[[CircuitView, datetime, Circuit], CircuitView]
"""A circuit decision as backends apply it: (the circuit now, the database's now, its settings)."""


def circuit_failed(count: int, error: str) -> CircuitMove:
    """The decision for `count` counted failures, the last with `error`."""

    def move(view: CircuitView, now: datetime, circuit: Circuit) -> CircuitView:
        return circuit_after_failures(
            view,
            now=now,
            count=count,
            failures=circuit.failures,
            window_s=circuit.window,
            cooldown_s=circuit.cooldown,
            error=error,
        )

    return move


def probe_succeeded(view: CircuitView, now: datetime, circuit: Circuit) -> CircuitView:
    """The decision for a probe that succeeded."""
    return circuit_after_success(view, now, cooldown_s=circuit.cooldown)


class CircuitWrite(NamedTuple):
    """One state of a circuit to store, the state it left, and the worker that moved it."""

    view: CircuitView
    before: CircuitState
    worker_id: str | None

    @property
    def moved(self) -> bool:
        return self.view.state is not self.before


def circuit_writes(
    stored: CircuitView, now: datetime, circuit: Circuit, move: CircuitMove, worker_id: str
) -> list[CircuitWrite]:
    """What a decision on a stored circuit writes, in order. An open circuit whose cooldown
    passed is half-open for claims before any worker recorded it (advance_circuits): that move
    comes first, so the history skips no state. Both backends apply these under their lock."""
    current = circuit_as_of(stored, now, cooldown_s=circuit.cooldown)
    writes = [CircuitWrite(current, stored.state, None)] if current != stored else []
    return [*writes, CircuitWrite(move(current, now, circuit), current.state, worker_id)]


def rate_bucket_s(rate: Rate) -> float:
    """The width of the buckets a rate's job starts are counted in: a twentieth of its period."""
    return rate.per / 20


LIVE_SETTINGS: Final = ("max_attempts", "backoff", "rate", "retention", "paused")
"""What a reloaded config changes in a running worker; everything else needs a restart."""

RESTART_SETTINGS: Final = ("concurrency", "timeout", "circuit")


def load_config(path: str | Path) -> dict[str, Queue]:
    """Read a `pgq.toml`: one `[queues.NAME]` table per queue. ConfigError names the key."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(data, source=str(path))


def parse_config(data: Mapping[str, Any], *, source: str = "config") -> dict[str, Queue]:
    """Validate a config already read from TOML (see `load_config`)."""
    unknown = sorted(set(data) - {"queues"})
    if unknown:
        raise ConfigError(f"{source}: unknown key {unknown[0]!r}; the file holds [queues.NAME]")
    tables = data.get("queues", {})
    if not isinstance(tables, Mapping):
        raise ConfigError(f"{source}: queues must be a table of [queues.NAME] tables")
    out: dict[str, Queue] = {}
    for name, body in tables.items():
        if not isinstance(body, Mapping):
            raise ConfigError(f"{source}: queues.{name} must be a table, got {body!r}")
        if "name" in body:
            raise ConfigError(f"{source}: queues.{name}.name: the table's name is the queue name")
        try:
            out[name] = _QUEUE.validate_python({"name": name, **body})
        except pydantic.ValidationError as exc:
            raise ConfigError(f"{source}: {_first_problem(exc, f'queues.{name}')}") from None
    return out


def merge_queues(
    declared: Sequence[str | Queue] | None, from_file: Mapping[str, Queue] | None
) -> tuple[list[str] | None, dict[str, Queue]]:
    """The queues a worker serves (None: every queue) and the policies it owns.

    The queues named in code (`queues=`, `--queue`) are the ones served; with none, every
    queue is (DESIGN.md), so a queue the file does not name is never starved by one it does.
    The file declares policies, never which queues are served: a worker owns the file's tables
    of the queues it serves (all of them when it serves every queue), and a queue named in code
    and in the file takes the file's table (operators tune the file).
    """
    policies: dict[str, Queue] = {}
    names: list[str] | None = None
    if declared is not None:
        names = []
        for item in declared:
            if isinstance(item, Queue):
                policies[item.name] = item
                names.append(item.name)
            else:
                names.append(check_queue_name(item))
    for name, policy in (from_file or {}).items():
        if names is None or name in names:
            policies[name] = policy
    return names, policies


def restart_required(old: Mapping[str, Queue], new: Mapping[str, Queue]) -> list[str]:
    """What a reload changed that only a restart applies, one phrase per change."""
    changes: list[str] = []
    for name in sorted(set(old) - set(new)):
        changes.append(f"queue {name} removed")
    for name in sorted(set(new) - set(old)):
        changes.append(f"queue {name} added")
    for name in sorted(set(old) & set(new)):
        for setting in RESTART_SETTINGS:
            before, after = getattr(old[name], setting), getattr(new[name], setting)
            if before != after:
                changes.append(f"queues.{name}.{setting} {_show(before)} -> {_show(after)}")
    return changes


def live_update(old: Queue, new: Queue) -> Queue:
    """`old` with the live settings of `new`: what a running worker applies on reload."""
    values = {f.name: getattr(old, f.name) for f in fields(Queue)}
    values.update({name: getattr(new, name) for name in LIVE_SETTINGS})
    return Queue(**values)


def _show(value: object) -> str:
    return "none" if value is None else repr(value)


def _first_problem(exc: pydantic.ValidationError, prefix: str) -> str:
    error = exc.errors()[0]
    loc = ".".join(str(part) for part in (prefix, *error["loc"]))
    message = error["msg"]
    if message.startswith("Value error, "):
        message = message.removeprefix("Value error, ")
    elif error["type"] in ("unexpected_keyword_argument", "extra_forbidden"):
        message = "unknown key"
    else:
        message = f"{message[:1].lower()}{message[1:]}, got {error.get('input')!r}"
    return f"{loc}: {message}"


def _import_exception(dotted: str) -> type[BaseException]:
    module_name, _, attr = dotted.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module_name or "builtins"), attr)
    except (ImportError, AttributeError, ValueError):
        raise ValueError(f"cannot import exception class {dotted!r}") from None
    if not (isinstance(obj, type) and issubclass(obj, BaseException)):
        raise ValueError(f"{dotted!r} is not an exception class")
    return obj


_QUEUE: Final = pydantic.TypeAdapter(Queue)
