"""Queue policies: a capped, rate-limited queue, and a circuit breaker in front of a flaky API.

Run it from the repository root, with a PostgreSQL you may create tables in:

    PGQ_DSN=postgresql://user:pw@localhost:5432/app .venv/bin/python examples/queues_app.py
    .venv/bin/python examples/queues_app.py postgresql://user:pw@localhost:5432/app

It creates pgq's tables in the schema `pgq_example_queues` (left in place; running it again adds
new jobs), then:

1. enqueues 20 `make_thumbnail` jobs in the queue "thumbnails", declared in code below: at most
   2 running at once and at most 10 starts per second, across every worker;
2. enqueues 8 `notify_partner` jobs in the queue "webhooks", declared in `pgq.toml` next to this
   file: a circuit breaker that opens after 3 connection errors and probes again after 0.5 s;
3. runs a worker in burst mode while the partner's API is down for its first 1.5 s: the
   circuit opens, probes fail and reopen it, then a probe succeeds and the queue drains;
4. prints `pgq.list_queues` (what `pgq queues --schema pgq_example_queues` shows) and the
   webhooks queue's circuit transitions, and checks the cap, the rate and the circuit.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import psycopg

import pgq

sys.path.insert(0, str(Path(__file__).resolve().parent))  # so the worker can import `tasks`
import tasks

SCHEMA = "pgq_example_queues"
CONFIG = Path(__file__).resolve().with_name("pgq.toml")  # [queues.webhooks]

# A policy in code. A queue declared both here and in the config file takes the file's table.
THUMBNAILS = pgq.Queue("thumbnails", concurrency=2, rate=pgq.Rate(10, per=1.0))


def main() -> None:
    dsn = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("PGQ_DSN")
    if not dsn:
        sys.exit("set PGQ_DSN or pass a DSN as the first argument")

    pgq.migrate(dsn, schema=SCHEMA)
    with psycopg.connect(dsn, autocommit=True) as conn:
        [started_at] = conn.execute("select now()").fetchone()  # database time, as events use

    # 1 and 2: enqueue both batches in one round trip.
    specs = [pgq.JobSpec(task=tasks.make_thumbnail, args={"image_id": i}) for i in range(20)]
    specs += [pgq.JobSpec(task=tasks.notify_partner, args={"order_id": i}) for i in range(8)]
    jobs = pgq.enqueue_many(dsn, specs, schema=SCHEMA)
    thumbnail_ids = [j.id for j in jobs[:20]]
    webhook_ids = [j.id for j in jobs[20:]]
    print(f"enqueued {len(thumbnail_ids)} thumbnails and {len(webhook_ids)} webhooks")

    # 3. The worker serves the queues named in code (with none, it would serve every queue),
    #    takes the webhooks policy from the file, and writes both policies to the database at
    #    start, where every worker's claims read them.
    worker = pgq.Worker(
        dsn,
        tasks=["tasks"],
        queues=[THUMBNAILS, "webhooks"],
        config=CONFIG,
        concurrency=4,
        schema=SCHEMA,
    )
    assert worker.queues == ["thumbnails", "webhooks"]
    tasks.partner_down_until = time.monotonic() + 1.5
    began = time.monotonic()
    worker.run_until_empty(max_wait=2.0)
    print(f"worker drained both queues in {time.monotonic() - began:.1f}s")

    # 4. What `pgq queues` shows: jobs per state, the policy, the circuit.
    print()
    print(f"{'queue':<11} {'queued':>6} {'running':>7} {'completed':>9} {'dead':>4}  circuit")
    infos = {q.name: q for q in pgq.list_queues(dsn, schema=SCHEMA)}
    for q in infos.values():
        print(
            f"{q.name:<11} {q.counts.get('queued', 0):>6} {q.running:>7}"
            f" {q.counts.get('completed', 0):>9} {q.counts.get('dead', 0):>4}"
            f"  {q.circuit_state if q.policy and q.policy.circuit else '-'}"
            f"{f' ({q.circuit_reason})' if q.circuit_reason else ''}"
        )
    print()
    print("webhooks circuit, this run:")
    moves = [e for e in reversed(infos["webhooks"].events) if e.kind == "circuit"]
    for e in (e for e in moves if e.at >= started_at):
        print(f"  {e.at:%H:%M:%S.%f}  {f'{e.from_state} -> {e.to_state}':<20}  {e.reason}")

    # The cap held (never more than 2 thumbnails at once) and so did the rate: the 11th start
    # waited for the first one-second window to pass (0.8: room for a slow first start).
    for job_id in thumbnail_ids + webhook_ids:
        job = pgq.get_job(dsn, job_id, schema=SCHEMA)
        assert job is not None, job_id
        assert job.state == "completed", job
    assert tasks.thumbnail_peak <= 2, tasks.thumbnail_peak
    starts = tasks.thumbnail_starts
    assert starts[10] - starts[0] >= 0.8, starts
    print()
    print(
        f"thumbnails: at most {tasks.thumbnail_peak} at once; the 11th started"
        f" {starts[10] - starts[0]:.2f}s after the first"
    )
    # The circuit opened while the API was down, and a successful probe closed it again.
    this_run = [e for e in moves if e.at >= started_at]
    assert any(e.to_state == "open" for e in this_run), this_run
    assert infos["webhooks"].circuit_state == "closed", infos["webhooks"]
    attempts = sum(
        job.attempt
        for job in pgq.list_jobs(dsn, queue="webhooks", schema=SCHEMA)
        if job.id in webhook_ids
    )
    print(f"webhooks: {len(webhook_ids)} jobs completed after {attempts} attempts in all")


if __name__ == "__main__":
    main()
