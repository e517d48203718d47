"""PGQueuer, in its fastest documented setup.

asyncpg driver on one dedicated connection for the QueueManager (its performance guide), uvloop
(what its CLI runs on), ``batch_size=500``, async entrypoints (no thread hand-off), durable
(logged) tables, the default, and ``pgq autovac`` applied after install as its tuning
checklist says. A finished job is deleted from ``pgqueuer`` and logged in ``pgqueuer_log``
with status ``successful``: that is what the orchestrator counts.
"""

from __future__ import annotations

import asyncio
import signal
import time

import asyncpg
import uvloop
from _common import Args, Stamper, emit, paced, parse_args, wait_for_go
from pgqueuer import AsyncpgDriver, Job, Queries, QueueManager
from pgqueuer.types import QueueExecutionMode
from pydantic_core import to_json

BATCH_SIZE = 500
stamper = Stamper()


async def connect(dsn: str) -> Queries:
    return Queries(AsyncpgDriver(await asyncpg.connect(dsn=dsn)))


async def setup(dsn: str) -> None:
    queries = await connect(dsn)
    await queries.install()
    await queries.optimize_autovacuum()
    emit(ok=True)


async def enqueue_one(dsn: str, n: int) -> None:
    queries = await connect(dsn)
    start = time.perf_counter()
    for _ in range(n):
        await queries.enqueue("noop", None, 0)
    emit(jobs=n, seconds=time.perf_counter() - start)


async def enqueue_bulk(dsn: str, n: int) -> None:
    queries = await connect(dsn)
    start = time.perf_counter()
    await queries.enqueue(["noop"] * n, [None] * n, [0] * n)
    emit(jobs=n, seconds=time.perf_counter() - start)


async def enqueue_bulk_typed(dsn: str, n: int, *, with_args: bool) -> None:
    # PGQueuer has no signature check: a job is an entrypoint name, a bytes payload and a
    # priority. Each job's args are serialized inside the timed region, as an application
    # does, with pydantic_core's to_json (PGQueuer's own serializer, and the fastest JSON
    # encoder in its environment: about 0.1 us for {} against 0.9 us for json.dumps).
    queries = await connect(dsn)
    start = time.perf_counter()
    if with_args:
        payloads: list[bytes | None] = [to_json({"i": k, "t": k / 2}) for k in range(n)]
    else:
        payloads = [to_json({}) for _ in range(n)]
    await queries.enqueue(["noop_typed"] * n, payloads, [0] * n)
    emit(jobs=n, seconds=time.perf_counter() - start)


def make_manager(queries: Queries) -> QueueManager:
    qm = QueueManager(queries)

    @qm.entrypoint("noop")
    async def noop(job: Job) -> None:
        pass

    @qm.entrypoint("stamp")
    async def stamp(job: Job) -> None:
        assert job.payload is not None
        stamper(int(job.payload))

    return qm


async def drain_worker(dsn: str) -> None:
    qm = make_manager(await connect(dsn))
    wait_for_go()
    await qm.run(batch_size=BATCH_SIZE, mode=QueueExecutionMode.drain)
    emit(done=True)


async def serve_worker(dsn: str) -> None:
    qm = make_manager(await connect(dsn))
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, qm.shutdown.set)
    emit(ready=True)
    await qm.run(batch_size=BATCH_SIZE)


async def latency_enqueue(dsn: str, n: int, interval: float) -> None:
    queries = await connect(dsn)
    t0: list[float] = []
    for i, deadline in paced(n, interval):
        delay = deadline - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        t0.append(time.time())
        await queries.enqueue("stamp", str(i).encode(), 0)
    emit(t0=t0)


async def main(args: Args) -> None:
    if args.command == "setup":
        await setup(args.dsn)
    elif args.command == "enqueue-one":
        await enqueue_one(args.dsn, args.n)
    elif args.command in ("enqueue-bulk", "prefill"):
        await enqueue_bulk(args.dsn, args.n)
    elif args.command == "enqueue-bulk-typed":
        await enqueue_bulk_typed(args.dsn, args.n, with_args=False)
    elif args.command == "enqueue-bulk-typed-args":
        await enqueue_bulk_typed(args.dsn, args.n, with_args=True)
    elif args.command == "drain-worker":
        await drain_worker(args.dsn)
    elif args.command == "serve-worker":
        await serve_worker(args.dsn)
    elif args.command == "latency-enqueue":
        await latency_enqueue(args.dsn, args.n, args.interval)


if __name__ == "__main__":
    uvloop.run(main(parse_args()))
