"""Procrastinate, in its fastest documented setup.

The async psycopg connector (``PsycopgConnector``), async tasks, a worker with
``concurrency=10`` (its docs: concurrency is for async tasks), LISTEN/NOTIFY on (the default),
jobs kept after completion (``delete_jobs="never"``, the default). A finished job has
``status = 'succeeded'``: that is what the orchestrator counts.
"""

from __future__ import annotations

import asyncio
import time

from _common import Args, Stamper, emit, paced, parse_args, wait_for_go
from procrastinate import App, PsycopgConnector

stamper = Stamper()


app = App(connector=PsycopgConnector())


@app.task(name="noop")
async def noop() -> None:
    pass


@app.task(name="stamp")
async def stamp(i: int) -> None:
    stamper(i)


async def setup() -> None:
    await app.schema_manager.apply_schema_async()
    emit(ok=True)


async def enqueue_one(n: int) -> None:
    start = time.perf_counter()
    for _ in range(n):
        await noop.defer_async()
    emit(jobs=n, seconds=time.perf_counter() - start)


async def enqueue_bulk(n: int) -> None:
    start = time.perf_counter()
    await noop.batch_defer_async(*({} for _ in range(n)))
    emit(jobs=n, seconds=time.perf_counter() - start)


async def drain_worker(concurrency: int) -> None:
    await app.check_connection_async()
    wait_for_go()
    await app.run_worker_async(concurrency=concurrency, wait=False)
    emit(done=True)


async def serve_worker(concurrency: int) -> None:
    # The worker installs its own SIGTERM handler and stops gracefully.
    emit(ready=True)
    await app.run_worker_async(concurrency=concurrency, wait=True)


async def latency_enqueue(n: int, interval: float) -> None:
    await app.check_connection_async()
    t0: list[float] = []
    for i, deadline in paced(n, interval):
        delay = deadline - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        t0.append(time.time())
        await stamp.defer_async(i=i)
    emit(t0=t0)


async def main(args: Args) -> None:
    with app.replace_connector(PsycopgConnector(conninfo=args.dsn)):
        async with app.open_async():
            if args.command == "setup":
                await setup()
            elif args.command == "enqueue-one":
                await enqueue_one(args.n)
            elif args.command in ("enqueue-bulk", "prefill"):
                await enqueue_bulk(args.n)
            elif args.command == "drain-worker":
                await drain_worker(args.concurrency)
            elif args.command == "serve-worker":
                await serve_worker(args.concurrency)
            elif args.command == "latency-enqueue":
                await latency_enqueue(args.n, args.interval)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
