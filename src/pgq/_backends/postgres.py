"""The PostgreSQL backend: runs the named queries of postgres.sql with psycopg 3."""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import re
import select
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any, LiteralString, Self, cast

import orjson
import psycopg
from psycopg import sql
from psycopg.rows import tuple_row
from psycopg.types.json import set_json_loads

from pgq._core.decisions import DISCARDED_PREFIX, RELEASED_ON_SHUTDOWN, RETENTION_DEFAULTS_S
from pgq._core.domain import (
    TRANSITIONS,
    Backoff,
    CircuitState,
    CircuitView,
    GiveUp,
    Lease,
    Outcome,
    RetryIn,
    State,
    circuit_as_of,
)
from pgq._core.errors import DatabaseError, InvalidTransition, JobNotFound
from pgq._core.policy import (
    Circuit,
    CircuitMove,
    Queue,
    Rate,
    Retention,
    circuit_failed,
    circuit_writes,
    probe_succeeded,
)
from pgq._core.records import (
    ClaimedJob,
    Enqueued,
    JobEvent,
    JobRecord,
    NewJob,
    QueueEvent,
    QueueInfo,
)

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

    from pgq._backends.ports import Backend

logger = logging.getLogger(__name__)

_HEADER = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def load_queries(text: str) -> dict[str, LiteralString]:
    """Split postgres.sql into {name: statement}, dropping the comment block under each header."""
    parts = _HEADER.split(text)
    queries: dict[str, LiteralString] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        lines = body.strip().splitlines()
        while lines and lines[0].startswith("--"):
            lines.pop(0)
        statement = "\n".join(lines).strip().rstrip(";")
        if name in queries:
            raise ValueError(f"postgres.sql names {name!r} twice")
        queries[name] = statement  # read from pgq's own file: a literal in all but name
    return queries


QUERIES: dict[str, LiteralString] = load_queries(
    resources.files("pgq._backends").joinpath("postgres.sql").read_text("utf-8")
)


@functools.cache
def _rendered(schema: str) -> dict[str, LiteralString]:
    # The schema was validated (_domain.check_schema_name) and is quoted as an identifier; it
    # is the only identifier in the text. Rendered once, so psycopg sees the same query bytes
    # every time and can prepare them.
    return {
        name: sql.SQL(text).format(schema=sql.Identifier(schema)).as_string()
        for name, text in QUERIES.items()
    }


def channel_for(schema: str) -> str:
    """The LISTEN/NOTIFY channel of a schema's jobs."""
    return f"pgq_{schema}"


def _message(exc: psycopg.Error) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


class translate_errors:
    """Turn psycopg errors into pgq.DatabaseError, keeping the cause. A class, not a generator:
    it wraps every statement pgq runs, and a generator-based context manager cost several
    times more per use."""

    __slots__ = ("schema",)

    def __init__(self, schema: str) -> None:
        self.schema = schema

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        if exc is None or not isinstance(exc, psycopg.Error):
            return
        if isinstance(exc, psycopg.errors.UndefinedTable):
            raise DatabaseError(
                f"pgq's tables are missing in schema {self.schema!r}: run `pgq migrate` "
                f"(or pgq.migrate(dsn)) first ({_message(exc)})"
            ) from exc
        raise DatabaseError(_message(exc)) from exc


def check_database(dsn: str, *, schema: str, timeout_s: float) -> None:
    """Connect once and look for pgq's tables: a clear DatabaseError if either fails."""
    try:
        conn = psycopg.connect(dsn, connect_timeout=max(1, math.ceil(timeout_s)))
    except psycopg.Error as exc:
        raise DatabaseError(f"cannot connect to the database: {_message(exc)}") from exc
    with conn, translate_errors(schema):
        conn.execute(_rendered(schema)["check_schema"])


def _configure(conn: psycopg.Connection[Any]) -> None:
    """pgq's own connections decode jsonb with orjson: json.loads was the largest Python cost
    per claimed job. Users' connections are never changed."""
    set_json_loads(orjson.loads, conn)


def _configure_worker(conn: psycopg.Connection[Any]) -> None:
    """A worker's connections also run prepared statements on generic plans. PostgreSQL kept
    planning the claim afresh at every call (custom plans: 0.3-0.5 ms of a 1.4-1.8 ms claim);
    the generic plans of every hot statement are the ones tests/integration/test_explain.py
    checks, over stale and fresh statistics."""
    _configure(conn)
    conn.execute("set plan_cache_mode = force_generic_plan")


Connect = Callable[[], contextlib.AbstractContextManager[psycopg.Connection[Any]]]
Cursor = psycopg.Cursor[tuple[Any, ...]]


def _new_cursor(conn: psycopg.Connection[Any]) -> Cursor:
    return conn.cursor(row_factory=tuple_row)


class PostgresBackend:
    """Backend on PostgreSQL. Build it with `from_dsn`, `pooled` or `on_connection`."""

    def __init__(self, connect: Connect, *, schema: str, owns: Any = None) -> None:
        self._connect = connect
        # The cursor a statement runs on: a new one on pgq's own connections, a kept one on a
        # caller's connection (_Borrowed.cursor).
        self._cursor: Callable[[psycopg.Connection[Any]], Cursor] = _new_cursor
        self._q = _rendered(schema)
        self.schema = schema
        self.channel = channel_for(schema)
        self._owns = owns
        self._dsn: str | None = None
        # (when read, queues with a policy row, those with a cap, rate or circuit): _policy_rows
        self._policy_cache: tuple[float, frozenset[str], frozenset[str]] | None = None

    # -- construction --------------------------------------------------------------------

    @classmethod
    def from_dsn(cls, dsn: str, *, schema: str = "pgq", connect_timeout: float = 10.0) -> Self:
        """A connection per call, for one-off reads and operator actions. Each pgq call is a
        single statement, so autocommit makes it atomic on its own."""

        @contextlib.contextmanager
        def connect() -> Iterator[psycopg.Connection[Any]]:
            with psycopg.connect(
                dsn, autocommit=True, connect_timeout=max(1, round(connect_timeout))
            ) as conn:
                _configure(conn)
                yield conn

        backend = cls(connect, schema=schema)
        backend._dsn = dsn
        return backend

    @classmethod
    def pooled(
        cls, dsn: str, *, schema: str = "pgq", size: int = 4, connect_timeout: float = 10.0
    ) -> Self:
        """A small pool of pgq's own connections, for a worker: each call is one transaction."""
        from psycopg_pool import ConnectionPool

        pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            dsn,
            # Every thread of a worker keeps one (see below): open them all in the background
            # at start, so that no first claim (on notify, too) waits for a connection.
            min_size=size,
            max_size=size,
            open=False,
            timeout=connect_timeout,
            # Autocommit: every call is one statement, so its own implicit transaction; this
            # saves the BEGIN and COMMIT round trips an explicit transaction would cost.
            kwargs={"autocommit": True, "connect_timeout": max(1, round(connect_timeout))},
            configure=_configure_worker,
            name=f"pgq-{schema}",
        )
        pool.open(wait=False)
        # Each thread keeps the connection it took until a call on it fails: a worker's claim
        # loop, flusher and maintenance thread each have their own, and a checkout per call
        # (about a tenth of a drain's Python time) is saved. A failed call hands it back, for
        # the pool to check and replace.
        local = threading.local()
        held: set[psycopg.Connection[Any]] = set()
        held_lock = threading.Lock()

        def release(conn: psycopg.Connection[Any]) -> None:
            with held_lock:
                held.discard(conn)
            local.conn = None
            pool.putconn(conn)

        @contextlib.contextmanager
        def connect() -> Iterator[psycopg.Connection[Any]]:
            conn = getattr(local, "conn", None)
            if conn is None:
                conn = local.conn = pool.getconn()
                with held_lock:
                    held.add(conn)
            try:
                yield conn
            except BaseException:
                release(conn)
                raise

        def close() -> None:
            with held_lock:
                taken = list(held)
                held.clear()
            for conn in taken:
                with contextlib.suppress(Exception):
                    pool.putconn(conn)
            pool.close()

        backend = cls(connect, schema=schema, owns=_Closer(close))
        backend._dsn = dsn
        return backend

    @classmethod
    def on_connection(cls, conn: psycopg.Connection[Any], *, schema: str = "pgq") -> Self:
        """Runs in the caller's connection and transaction, and never commits it."""
        # Kept per connection by _targets.backend_for, so it holds its connection weakly.
        borrowed = _Borrowed(conn)
        backend = cls(borrowed, schema=schema)
        backend._cursor = borrowed.cursor
        return backend

    def close(self) -> None:
        if self._owns is not None:
            self._owns.close()
            self._owns = None

    # -- plumbing --------------------------------------------------------------------------

    def _rows(self, name: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        with translate_errors(self.schema), self._connect() as conn:
            cur = self._cursor(conn)
            cur.execute(self._q[name], params)
            return cur.fetchall()

    def _run(self, name: str, params: dict[str, Any]) -> None:
        with translate_errors(self.schema), self._connect() as conn:
            self._cursor(conn).execute(self._q[name], params)

    # -- enqueue ---------------------------------------------------------------------------

    def enqueue_many(self, jobs: Sequence[NewJob]) -> list[Enqueued]:
        if not jobs:
            return []
        if len(jobs) == 1:
            [job] = jobs
            if job.idempotency_key is None and job.run_at is None and not job.delay_s:
                [(job_id, _)] = self._rows(
                    "enqueue_one_now",
                    {
                        "queue": job.queue,
                        "task": job.task,
                        "args": job.args_json,
                        "priority": job.priority,
                        "max_attempts": job.max_attempts,
                        "channel": self.channel,
                    },
                )
                return [Enqueued(job_id, True)]
            params: dict[str, Any] = {
                "queue": job.queue,
                "task": job.task,
                "args": job.args_json,
                "priority": job.priority,
                "run_at": job.run_at,
                "delay_s": job.delay_s,
                "max_attempts": job.max_attempts,
                "channel": self.channel,
            }
            if job.idempotency_key is None:
                # No ON CONFLICT, so no speculative insertion: the cheaper statement.
                [(job_id, _)] = self._rows("enqueue_one_unkeyed", params)
                return [Enqueued(job_id, True)]
            params["key"] = job.idempotency_key
            [(job_id, created)] = self._rows("enqueue_one", params)
            return [Enqueued(job_id, created)]
        if len(jobs) >= _COPY_MIN and all(
            job.idempotency_key is None and job.run_at is None and job.delay_s == 0 for job in jobs
        ):
            return self._enqueue_copy(jobs)
        if all(job.idempotency_key is None for job in jobs):
            rows = self._rows(
                "enqueue_many_unkeyed", {"jobs": _payload(jobs).decode(), "channel": self.channel}
            )
            return [Enqueued(job_id, True) for (job_id,) in rows]
        rows = self._rows(
            "enqueue_many", {"jobs": _payload(jobs).decode(), "channel": self.channel}
        )
        by_n = {n: Enqueued(job_id, created) for n, job_id, created in rows}
        return [by_n[n] for n in range(1, len(jobs) + 1)]

    def _enqueue_copy(self, jobs: Sequence[NewJob]) -> list[Enqueued]:
        """Write a large, plain batch with COPY: four statements in one transaction."""
        q = self._q
        with translate_errors(self.schema), self._connect() as conn, _atomic(conn):
            cur = self._cursor(conn)
            ids = [i for (i,) in cur.execute(q["copy_job_ids"], {"n": len(jobs)})]
            with cur.copy(q["copy_jobs"]) as copy:
                for job_id, job in zip(ids, jobs, strict=True):
                    copy.write_row(
                        (job_id, job.queue, job.task, job.args_json, job.priority, job.max_attempts)
                    )
            with cur.copy(q["copy_events"]) as copy:
                for job_id in ids:
                    copy.write_row((job_id, "queued", 0))
            queues = sorted({job.queue for job in jobs})
            cur.execute(q["copy_notify"], {"channel": self.channel, "queues": queues})
        return [Enqueued(job_id, True) for job_id in ids]

    # -- worker ----------------------------------------------------------------------------

    def claim(
        self,
        *,
        worker_id: str,
        wants: Sequence[tuple[str, int]],
        lease_s: float,
        max_attempts: Mapping[str, int] | None = None,
    ) -> list[ClaimedJob]:
        wants = [(q, n) for q, n in wants if n > 0]
        if not wants:
            return []
        rows_of, guarded_of = self._policy_rows()
        params: dict[str, Any] = {
            "queues": [q for q, _ in wants],
            "limits": [n for _, n in wants],
            "worker_id": worker_id,
            "lease_s": lease_s,
            "task_names": list(max_attempts or ()),
            "task_max_attempts": list((max_attempts or {}).values()),
        }
        if not any(q in rows_of for q, _ in wants):
            # No policy row for any of them when last read: the claim without the policy work.
            return list(map(ClaimedJob._make, self._rows("claim_plain", params)))
        # Name order: the row locks of guarded queues never wait in a cycle.
        params["guarded"] = sorted(q for q, _ in wants if q in guarded_of)
        claimed: list[ClaimedJob] = []
        for _ in range(_CLAIM_TRIES):
            stale: list[tuple[str, int]] = []
            for row in self._rows("claim", params):
                if row[0]:
                    claimed.append(ClaimedJob._make(row))
                else:  # another claim of this guarded queue committed meanwhile: ask again
                    stale.append((row[1], dict(wants)[row[1]]))
            if not stale:
                break
            params |= {"queues": [q for q, _ in stale], "limits": [n for _, n in stale]}
        return claimed

    def _policy_rows(self) -> tuple[frozenset[str], frozenset[str]]:
        """The queues that have a policy row, and those of them with a cap, a rate or a
        circuit, as last read (read_policies; again here when older than a second). A queue
        whose row is newer than that gives nothing until the next read: the statements check
        the rows themselves, so a stale cache delays jobs by a second, never breaks a cap."""
        cache = self._policy_cache
        if cache is None or time.monotonic() - cache[0] > _POLICY_CACHE_S:
            self.read_policies()
            cache = self._policy_cache
            assert cache is not None
        return cache[1], cache[2]

    def extend_leases(self, leases: Sequence[Lease], *, lease_s: float) -> set[Lease]:
        held: set[Lease] = set()
        for worker_id, ids, attempts in _by_worker(leases):
            rows = self._rows(
                "extend_leases",
                {"ids": ids, "attempts": attempts, "worker_id": worker_id, "lease_s": lease_s},
            )
            held.update(Lease(i, a, worker_id) for i, a in rows)
        return held

    def complete_many(self, leases: Sequence[Lease]) -> set[Lease]:
        done: set[Lease] = set()
        for worker_id, ids, attempts in _by_worker(leases):
            rows = self._rows(
                "complete_many",
                {
                    "ids": ids,
                    "attempts": attempts,
                    "worker_id": worker_id,
                    "discarded": DISCARDED_PREFIX,
                },
            )
            done.update(Lease(i, a, worker_id) for i, a in rows)
        return done

    def fail(self, lease: Lease, outcome: Outcome, *, error: str) -> bool:
        if isinstance(outcome, RetryIn):
            to_state, delay_s = State.RETRYING, outcome.delay_s
        else:
            assert isinstance(outcome, GiveUp)
            to_state, delay_s, error = State.DEAD, 0.0, outcome.reason
        [(n,)] = self._rows(
            "fail",
            {
                "job_id": lease.job_id,
                "attempt": lease.attempt,
                "worker_id": lease.worker_id,
                "to_state": str(to_state),
                "delay_s": delay_s,
                "error": error,
                "discarded": DISCARDED_PREFIX,
            },
        )
        return bool(n)

    def release(self, leases: Sequence[Lease]) -> int:
        total = 0
        for worker_id, ids, attempts in _by_worker(leases):
            [(n,)] = self._rows(
                "release",
                {
                    "ids": ids,
                    "attempts": attempts,
                    "worker_id": worker_id,
                    "channel": self.channel,
                    "reason": RELEASED_ON_SHUTDOWN,
                },
            )
            total += n
        return total

    def reap_expired(self, *, limit: int, default_max_attempts: int) -> dict[str, int]:
        rows = self._rows(
            "reap_expired",
            {"limit": limit, "default_max_attempts": default_max_attempts, "channel": self.channel},
        )
        self._run("prune_workers", {})
        return dict(rows)

    # -- queue policies --------------------------------------------------------------------

    def write_policies(
        self, policies: Sequence[Queue], *, worker_id: str, live_only: bool = False
    ) -> None:
        self._policy_cache = None  # this backend's own writes count at its next claim
        for policy in policies:
            self._run(
                "write_live_policy" if live_only else "write_policy",
                _policy_params(policy) | {"worker_id": worker_id},
            )
            if policy.paused is not None:
                self.set_paused(policy.name, policy.paused, by=worker_id)

    def read_policies(self) -> dict[str, Queue]:
        policies = {row[0]: _policy_from_row(row) for row in self._rows("read_policies", {})}
        guarded = frozenset(
            name
            for name, p in policies.items()
            if p.concurrency is not None or p.rate is not None or p.circuit is not None
        )
        self._policy_cache = (time.monotonic(), frozenset(policies), guarded)
        return policies

    def set_paused(self, queue: str, paused: bool, *, by: str) -> bool:
        self._policy_cache = None
        [(n,)] = self._rows(
            "set_paused", {"queue": queue, "paused": paused, "by": by, "channel": self.channel}
        )
        return bool(n)

    def record_circuit_failures(
        self, queue: str, *, count: int, error: str, worker_id: str
    ) -> str | None:
        return self._move_circuit(queue, circuit_failed(count, error), worker_id)

    def record_probe_success(self, queue: str, *, worker_id: str) -> bool:
        return self._move_circuit(queue, probe_succeeded, worker_id) is not None

    def _move_circuit(self, queue: str, move: CircuitMove, worker_id: str) -> str | None:
        """Lock a circuit, apply a _domain decision to it, write it back: one transaction."""
        with translate_errors(self.schema), self._connect() as conn, _atomic(conn):
            cur = self._cursor(conn)
            row = cur.execute(self._q["circuit_for_update"], {"queue": queue}).fetchone()
            if row is None:
                return None
            state, since, recent, reason, failures, window_s, cooldown_s, now = row
            circuit = Circuit(failures=failures, window=window_s, cooldown=cooldown_s)
            stored = CircuitView(CircuitState(state), since, tuple(recent), reason)
            writes = circuit_writes(stored, now, circuit, move, worker_id)
            for write in writes:
                cur.execute(
                    self._q["circuit_write"],
                    {
                        "queue": queue,
                        "state": str(write.view.state),
                        "since": write.view.since,
                        "recent": list(write.view.recent),
                        "reason": write.view.reason,
                        "from_state": str(write.before) if write.moved else None,
                        "worker_id": write.worker_id,
                        "channel": self.channel,
                    },
                )
            last = writes[-1]
            return str(last.view.state) if last.moved else None

    def advance_circuits(self) -> int:
        [(n,)] = self._rows("advance_circuits", {"channel": self.channel})
        return int(n)

    def prune_finished(self, *, limit: int) -> int:
        [(n,)] = self._rows(
            "prune_finished",
            {
                "limit": limit,
                **RETENTION_DEFAULTS_S,
            },
        )
        return int(n)

    def list_queues(self) -> list[QueueInfo]:
        counts: dict[str, dict[str, int]] = {}
        oldest: dict[str, float] = {}
        for queue, state, n, age_s in self._rows("list_queues", {}):
            counts.setdefault(queue, {})[state] = n
            if state in ("queued", "retrying") and age_s is not None:
                oldest[queue] = max(oldest.get(queue, age_s), age_s)
        rows = {row[0]: row for row in self._rows("read_policies", {})}
        names = sorted(set(counts) | set(rows))
        events: dict[str, list[QueueEvent]] = {}
        for queue, *fields in self._rows("queue_events", {"queues": names, "limit": 10}):
            events.setdefault(queue, []).append(QueueEvent(*fields))
        notes = [line for (text,) in self._rows("restart_notes", {}) for line in text.splitlines()]
        out = []
        for name in names:
            row = rows.get(name)
            policy = _policy_from_row(row) if row else None
            circuit = _circuit_now(row) if row is not None and row[4] is not None else None
            out.append(
                QueueInfo(
                    name=name,
                    counts=counts.get(name, {}),
                    policy=policy,
                    paused=bool(row and row[15]),
                    circuit_state=str(circuit.state) if circuit else "closed",
                    circuit_since=circuit.since if circuit else None,
                    circuit_reason=circuit.reason if circuit else None,
                    oldest_runnable_age_s=oldest.get(name),
                    restart_required=[
                        n for n in notes if n.startswith((f"queues.{name}.", f"queue {name} "))
                    ],
                    events=events.get(name, []),
                )
            )
        return out

    def report_restart_required(self, worker_id: str, changes: Sequence[str]) -> None:
        self._run(
            "report_restart_required",
            {"worker_id": worker_id, "changes": "\n".join(changes) if changes else None},
        )

    def runnable_queues(self) -> list[str]:
        return [q for (q,) in self._rows("runnable_queues", {})]

    def next_due_in(self, queues: Sequence[str]) -> float | None:
        [(due,)] = self._rows("next_due_in", {"queues": list(queues)})
        return None if due is None else float(due)

    def register_worker(
        self,
        worker_id: str,
        *,
        hostname: str,
        pid: int,
        queues: Sequence[str] | None,
        concurrency: int,
    ) -> None:
        self._run(
            "register_worker",
            {
                "worker_id": worker_id,
                "hostname": hostname,
                "pid": pid,
                "queues": None if queues is None else list(queues),
                "concurrency": concurrency,
            },
        )

    def worker_heartbeat(self, worker_id: str) -> None:
        self._run("worker_heartbeat", {"worker_id": worker_id})

    def deregister_worker(self, worker_id: str) -> None:
        self._run("deregister_worker", {"worker_id": worker_id})

    def listener(self) -> PgListener:
        if self._dsn is None:
            raise RuntimeError("a backend on a borrowed connection cannot LISTEN")
        return PgListener(self._dsn, self.channel)

    # -- inspect and replay ----------------------------------------------------------------

    def get_job(self, job_id: int) -> JobRecord | None:
        rows = self._rows("get_job", {"job_id": job_id})
        if not rows:
            return None
        return self._with_events(rows)[0]

    def list_jobs(self, *, queue: str | None, state: str | None, limit: int) -> list[JobRecord]:
        rows = self._rows("list_jobs", {"queue": queue, "state": state, "limit": limit})
        return self._with_events(rows)

    def retry_job(self, job_id: int) -> JobRecord:
        froms = [
            str(s) for s, to in TRANSITIONS.items() if State.QUEUED in to and s != State.RUNNING
        ]
        return self._operator_move("retry_job", job_id, froms, "replay")

    def cancel_job(self, job_id: int) -> JobRecord:
        froms = [str(s) for s, to in TRANSITIONS.items() if State.CANCELLED in to]
        return self._operator_move("cancel_job", job_id, froms, "cancel")

    def _operator_move(self, name: str, job_id: int, froms: list[str], verb: str) -> JobRecord:
        params: dict[str, Any] = {"job_id": job_id, "from_states": froms, "channel": self.channel}
        with translate_errors(self.schema), self._connect() as conn:
            cur = self._cursor(conn)
            cur.execute(self._q[name], params)
            moved = cur.fetchall()
            if not moved:
                cur.execute(self._q["job_state"], {"job_id": job_id})
                row = cur.fetchone()
                if row is None:
                    raise JobNotFound(f"no job with id {job_id}")
                allowed = " or ".join(froms)
                raise InvalidTransition(
                    f"cannot {verb} job {job_id}: it is {row[0]}; only {allowed} jobs can be"
                )
        record = self.get_job(job_id)
        assert record is not None
        return record

    def _with_events(self, rows: list[tuple[Any, ...]]) -> list[JobRecord]:
        ids = [r[0] for r in rows]
        events: dict[int, list[JobEvent]] = {i: [] for i in ids}
        for job_id, *fields in self._rows("job_events", {"job_ids": ids}):
            events[job_id].append(JobEvent(*fields))
        return [
            JobRecord(**dict(zip(_JOB_FIELDS, row, strict=True)), events=events[row[0]])
            for row in rows
        ]


class _Borrowed:
    """`connect()` for a backend on the caller's connection: hands it out, never closes it.

    It also keeps a cursor per thread for pgq's statements. A fresh cursor starts with cold
    adapter caches: on a one-job enqueue that cost about 9 us of client CPU and 14 us of wall
    time (200 vs 186 us per job, interleaved runs on PG 15), 7% of the call. The kept cursor
    reaches its connection through a weak proxy, so neither it nor the backend keeps a
    connection the caller dropped alive (psycopg frees connections by reference counting,
    and a cycle would leave a dropped, unclosed one open until the garbage collector ran).
    It copies the connection's adapters when it is made, so adapters registered on the
    connection later do not change what pgq reads (docs/transactions.md says so).
    """

    __slots__ = ("_kept", "_ref")

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._ref = weakref.ref(conn)
        # (thread ident, cursor): a cursor serves one thread; another thread makes its own.
        self._kept: tuple[int, Cursor | None] = (0, None)

    def __call__(self) -> _Borrowed:
        return self

    def __enter__(self) -> psycopg.Connection[Any]:
        conn = self._ref()
        if conn is None:
            raise DatabaseError("the connection this backend ran on is gone")
        return conn

    def __exit__(self, *exc: object) -> None:
        return None

    def cursor(self, conn: psycopg.Connection[Any]) -> Cursor:
        owner, cur = self._kept
        me = threading.get_ident()
        if cur is None or owner != me:
            proxy = cast("psycopg.Connection[Any]", weakref.proxy(conn))
            cur = psycopg.Cursor(proxy, row_factory=tuple_row)
            self._kept = (me, cur)
        return cur


class _Closer:
    """What a pooled backend owns: closing it hands back every thread's connection, then
    closes the pool."""

    def __init__(self, close: Callable[[], None]) -> None:
        self.close = close


def _atomic(conn: psycopg.Connection[Any]) -> contextlib.AbstractContextManager[Any]:
    """Make several statements one transaction without ever committing the caller's.

    In a transaction already, or on a connection that is not autocommit (psycopg opens one at
    the first statement and the caller commits it), the statements simply join it. Only an
    autocommit connection outside a transaction gets a transaction block of its own.
    """
    idle = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    return conn.transaction() if conn.autocommit and idle else contextlib.nullcontext()


# How long the claim trusts the policy rows it last read (the worker reads them every second).
_POLICY_CACHE_S = 1.0

# A claim of a guarded queue that lost a race with another claim is asked again at most this
# many times in a row (then the worker's next claim tries).
_CLAIM_TRIES = 5

# Batches at least this large, with no idempotency key, delay or run_at, are written with COPY.
_COPY_MIN = 100

_JOB_FIELDS = (
    "id", "queue", "task", "args", "state", "attempt", "max_attempts", "last_error", "run_at",
    "created_at", "finished_at", "priority", "idempotency_key", "worker_id", "lease_expires_at",
)  # fmt: skip


def _policy_params(policy: Queue) -> dict[str, Any]:
    rate, circuit, backoff = policy.rate, policy.circuit, policy.backoff
    retention = policy.retention
    return {
        "name": policy.name,
        "concurrency": policy.concurrency,
        "rate_limit": rate.limit if rate else None,
        "rate_per_s": rate.per if rate else None,
        "circuit_failures": circuit.failures if circuit else None,
        "circuit_window_s": circuit.window if circuit else None,
        "circuit_cooldown_s": circuit.cooldown if circuit else None,
        "circuit_probes": circuit.probes if circuit else None,
        "circuit_on": circuit.on_names if circuit else None,
        "max_attempts": policy.max_attempts,
        "backoff_base_s": backoff.base if backoff else None,
        "backoff_cap_s": backoff.cap if backoff else None,
        "timeout_s": policy.timeout,
        "retention_completed_s": retention.completed if retention else None,
        "retention_dead_s": retention.dead if retention else None,
    }


def _circuit_now(row: Sequence[Any]) -> CircuitView:
    """A read_policies row's circuit as it stands now (open past its cooldown: half-open)."""
    state, since, reason, now = row[16:20]
    view = CircuitView(CircuitState(state), since, (), reason)
    return circuit_as_of(view, now, cooldown_s=row[6])


def _policy_from_row(row: Sequence[Any]) -> Queue:
    """A read_policies row as a Queue (a circuit's `on` names that no longer import are
    dropped: the worker then counts every failure, the default)."""
    name, concurrency, rate_limit, rate_per_s, failures, window_s, cooldown_s, probes = row[:8]
    on, max_attempts, base_s, cap_s, timeout_s, keep_completed, keep_dead, paused = row[8:16]
    circuit = None
    if failures is not None:
        try:
            circuit = Circuit(failures, window_s, cooldown_s, probes, on)
        except ValueError:
            circuit = Circuit(failures, window_s, cooldown_s, probes)
    return Queue(
        name,
        concurrency=concurrency,
        rate=Rate(rate_limit, rate_per_s) if rate_limit is not None else None,
        circuit=circuit,
        max_attempts=max_attempts,
        backoff=Backoff(base_s, cap_s) if base_s is not None else None,
        timeout=timeout_s,
        retention=(
            Retention(keep_completed, keep_dead)
            if keep_completed is not None or keep_dead is not None
            else None
        ),
        paused=paused,
    )


def _by_worker(leases: Sequence[Lease]) -> Iterator[tuple[str, list[int], list[int]]]:
    groups: dict[str, tuple[list[int], list[int]]] = {}
    for lease in leases:
        ids, attempts = groups.setdefault(lease.worker_id, ([], []))
        ids.append(lease.job_id)
        attempts.append(lease.attempt)
    for worker_id, (ids, attempts) in groups.items():
        yield worker_id, ids, attempts


def _payload(jobs: Sequence[NewJob]) -> bytes:
    """The batch as one JSON array; each job's args are already JSON text, spliced in as is."""
    return orjson.dumps(
        [
            {
                "queue": job.queue,
                "task": job.task,
                "priority": job.priority,
                "run_at": None if job.run_at is None else job.run_at.isoformat(),
                "delay_s": job.delay_s,
                "key": job.idempotency_key,
                "max_attempts": job.max_attempts,
                "args": orjson.Fragment(job.args_json),
            }
            for job in jobs
        ]
    )


class PgListener:
    """LISTEN on its own connection. On a lost connection it reconnects with backoff, and until
    then it only sleeps: the worker's polling carries on without it. A wait also watches a
    pipe, so that `interrupt` (from another thread) ends it at once: a worker's run then ends
    without waiting out the listener's timeout."""

    def __init__(self, dsn: str, channel: str) -> None:
        self._dsn = dsn
        self._channel = channel
        self._conn: psycopg.Connection[Any] | None = None
        self._retry_at = 0.0
        self._backoff_s = 0.5
        self._closed = threading.Event()
        self._interrupted = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)

    def _ensure(self) -> psycopg.Connection[Any] | None:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        if time.monotonic() < self._retry_at:
            return None
        try:
            conn = psycopg.connect(self._dsn, autocommit=True, connect_timeout=5)
            conn.execute(sql.SQL("listen {}").format(sql.Identifier(self._channel)))
        except psycopg.Error as exc:
            self._retry_at = time.monotonic() + self._backoff_s
            self._backoff_s = min(self._backoff_s * 2, 10.0)
            logger.warning("listen connection failed; polling only", extra={"error": str(exc)})
            return None
        self._backoff_s = 0.5
        self._conn = conn
        return conn

    def wait(self, timeout_s: float) -> set[str]:
        if self._interrupted.is_set():
            return set()
        conn = self._ensure()
        if conn is None:
            self._interrupted.wait(
                min(timeout_s, max(0.0, self._retry_at - time.monotonic())) or timeout_s
            )
            return set()
        try:
            ready, _, _ = select.select([conn.fileno(), self._wake_r], [], [], timeout_s)
            if self._wake_r in ready or not ready:
                return set()
            # Readable: take every notification that arrived (one wake-up serves them all).
            return {n.payload for n in conn.notifies(timeout=0.0) if n.payload}
        except (psycopg.Error, OSError, ValueError) as exc:
            if self._closed.is_set():
                return set()  # closed under us at shutdown
            logger.warning("listen connection lost; reconnecting", extra={"error": str(exc)})
            with contextlib.suppress(psycopg.Error):
                conn.close()
            self._conn = None
            return set()

    def interrupt(self) -> None:
        self._interrupted.set()
        with contextlib.suppress(OSError):  # a full pipe is a pending wake-up already
            os.write(self._wake_w, b"x")

    def close(self) -> None:
        self._closed.set()
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)


if TYPE_CHECKING:

    def _conforms(b: PostgresBackend) -> Backend:
        return b
