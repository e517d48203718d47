-- Every statement pgq runs at runtime against PostgreSQL, by name. The loader (postgres.py) reads
-- this file once, drops the comment block under each header, and composes `{schema}` with
-- psycopg.sql.Identifier. Each name is the PostgresBackend method that runs it.
-- psycopg reads percent signs everywhere, comments included: write "percent", never the sign.

-- name: enqueue_many
-- Writes a batch of jobs in one round trip: the batch arrives as one jsonb array expanded here.
-- Ids are taken from the sequence up front so each result maps back to its input row by id;
-- a row whose (queue, idempotency_key) already exists maps back by that pair instead.
-- ON CONFLICT DO UPDATE (a no-op write) rather than DO NOTHING: it returns the existing row even
-- when a concurrent transaction inserted it after this statement's snapshot (race-safe).
-- (xmax = 0) tells a fresh row from an existing one. Duplicate keys within one batch are folded
-- by the caller first (ON CONFLICT cannot touch a row twice).
-- pg_notify runs in this transaction, so workers are woken at commit, never before.
-- Index: jobs_idempotency_idx (queue, idempotency_key) where idempotency_key is not null.
with input as (
    select t.n,
           nextval('{schema}.jobs_id_seq'::regclass) as id,
           t.x ->> 'queue' as queue,
           t.x ->> 'task' as task,
           t.x -> 'args' as args,
           (t.x ->> 'priority')::int as priority,
           coalesce((t.x ->> 'run_at')::timestamptz, now())
               + make_interval(secs => (t.x ->> 'delay_s')::float8) as run_at,
           t.x ->> 'key' as idempotency_key,
           (t.x ->> 'max_attempts')::int as max_attempts
      from jsonb_array_elements(%(jobs)s::jsonb) with ordinality as t (x, n)
),
inserted as (
    insert into {schema}.jobs as j
           (id, queue, task, args, priority, run_at, idempotency_key, max_attempts)
    overriding system value
    select id, queue, task, args, priority, run_at, idempotency_key, max_attempts
      from input
     order by n
        on conflict (queue, idempotency_key) where idempotency_key is not null
        do update set idempotency_key = excluded.idempotency_key
 returning j.id, j.queue, j.idempotency_key, (j.xmax = 0) as created
),
logged as (
    insert into {schema}.job_events (job_id, from_state, to_state, attempt)
    select id, null, 'queued', 0
      from inserted
     where created
),
notified as (
    select count(pg_notify(%(channel)s, q.queue)) as n
      from (select distinct queue from inserted where created) as q
)
select i.n,
       coalesce(fresh.id, existing.id) as id,
       coalesce(fresh.created, existing.created) as created
  from input as i
  left join inserted as fresh
    on fresh.id = i.id
  left join inserted as existing
    on i.idempotency_key is not null
   and existing.queue = i.queue
   and existing.idempotency_key = i.idempotency_key
 cross join notified;

-- name: enqueue_many_unkeyed
-- enqueue_many for a batch with no idempotency key, the bulk-load case: no ON CONFLICT to
-- check and no join to map results back: ids come from the sequence in input order, and the
-- input CTE (referenced twice, so materialized once) hands them back in that order.
with input as (
    select t.n,
           nextval('{schema}.jobs_id_seq'::regclass) as id,
           t.x
      from jsonb_array_elements(%(jobs)s::jsonb) with ordinality as t (x, n)
),
inserted as (
    insert into {schema}.jobs (id, queue, task, args, priority, run_at, max_attempts)
    overriding system value
    select id,
           x ->> 'queue',
           x ->> 'task',
           x -> 'args',
           (x ->> 'priority')::int,
           coalesce((x ->> 'run_at')::timestamptz, now())
               + make_interval(secs => (x ->> 'delay_s')::float8),
           (x ->> 'max_attempts')::int
      from input
 returning id, queue
),
logged as (
    insert into {schema}.job_events (job_id, from_state, to_state, attempt)
    select id, null, 'queued', 0
      from inserted
),
notified as (
    select count(pg_notify(%(channel)s, q.queue)) as n
      from (select distinct queue from inserted) as q
)
select input.id
  from input
 cross join notified
 order by input.n;

-- name: copy_job_ids
-- The bulk path (a large batch with no idempotency key, delay or run_at): ids for the batch,
-- taken up front so the rows can be written with COPY and handed back in input order.
select nextval('{schema}.jobs_id_seq'::regclass)
  from generate_series(1, %(n)s);

-- name: copy_jobs
-- The bulk path's job rows. COPY skips the per-row expression work of INSERT ... SELECT (about
-- 3x faster here); state, attempt, run_at and created_at take their defaults, so run_at is the
-- database's now(). Runs in the same transaction as copy_events and copy_notify.
copy {schema}.jobs (id, queue, task, args, priority, max_attempts) from stdin;

-- name: copy_events
-- The bulk path's enqueue events (from_state null -> queued, attempt 0, at now()).
copy {schema}.job_events (job_id, to_state, attempt) from stdin;

-- name: copy_notify
-- The bulk path's wake-up: one NOTIFY per queue in the batch, delivered at commit.
select count(pg_notify(%(channel)s, q.queue))
  from unnest(%(queues)s::text[]) as q (queue);

-- name: enqueue_one
-- enqueue_many for a batch of one with an idempotency key: the same writes (job, event, NOTIFY
-- at commit, race-safe idempotency) without expanding a jsonb array or taking ids from the
-- sequence up front. A job without a key goes to enqueue_one_unkeyed.
-- Index: jobs_idempotency_idx (queue, idempotency_key) where idempotency_key is not null.
with inserted as (
    insert into {schema}.jobs as j
           (queue, task, args, priority, run_at, idempotency_key, max_attempts)
    values (%(queue)s::text, %(task)s::text, %(args)s::jsonb, %(priority)s::int,
            coalesce(%(run_at)s::timestamptz, now()) + make_interval(secs => %(delay_s)s),
            %(key)s::text, %(max_attempts)s::int)
        on conflict (queue, idempotency_key) where idempotency_key is not null
        do update set idempotency_key = excluded.idempotency_key
 returning j.id, j.queue, (j.xmax = 0) as created
),
logged as (
    insert into {schema}.job_events (job_id, from_state, to_state, attempt)
    select id, null, 'queued', 0
      from inserted
     where created
),
notified as (
    select count(pg_notify(%(channel)s, queue)) as n
      from inserted
     where created
)
select inserted.id, inserted.created
  from inserted
 cross join notified;

-- name: enqueue_one_unkeyed
-- enqueue_one for a job with no idempotency key, the common case: the same writes (job, event,
-- NOTIFY at commit) as a plain insert. Without ON CONFLICT, PostgreSQL skips the speculative
-- insertion (its token lock and confirm record) that the keyed path pays even when the key
-- is null; every row is new, so no xmax test. Measured with pgbench, one job per transaction,
-- fsync on: 1.10x-1.14x the transactions per second of enqueue_one with a null key (pgbench),
-- server CPU 108 vs 116 us per transaction.
-- Index: none read; jobs_pkey and jobs_claim_idx are written.
-- Plan seen on PG 15: CTE Scan on inserted, over Insert on jobs -> Result and
-- Insert on job_events -> CTE Scan.
with inserted as (
    insert into {schema}.jobs
           (queue, task, args, priority, run_at, max_attempts)
    values (%(queue)s::text, %(task)s::text, %(args)s::jsonb, %(priority)s::int,
            coalesce(%(run_at)s::timestamptz, now()) + make_interval(secs => %(delay_s)s),
            %(max_attempts)s::int)
 returning id, queue
),
logged as (
    insert into {schema}.job_events (job_id, from_state, to_state, attempt)
    select id, null, 'queued', 0
      from inserted
)
select id, pg_notify(%(channel)s, queue)
  from inserted;

-- name: enqueue_one_now
-- enqueue_one_unkeyed for a job due now (no run_at, no delay), the commonest enqueue of all:
-- run_at takes its column default, now(), and six parameters travel instead of eight.
-- Index: none read; jobs_pkey and jobs_claim_idx are written.
with inserted as (
    insert into {schema}.jobs
           (queue, task, args, priority, max_attempts)
    values (%(queue)s::text, %(task)s::text, %(args)s::jsonb, %(priority)s::int,
            %(max_attempts)s::int)
 returning id, queue
),
logged as (
    insert into {schema}.job_events (job_id, from_state, to_state, attempt)
    select id, null, 'queued', 0
      from inserted
)
select id, pg_notify(%(channel)s, queue)
  from inserted;

-- name: claim
-- Takes runnable jobs from several queues in one statement, up to a limit per queue, and stamps
-- each lease from the database clock. The lateral subquery runs once per queue, so each queue's
-- jobs come from jobs_claim_idx led by that queue: a flood in one queue is never scanned while
-- looking for another's jobs (a single index scan over queue = any(...) sorted every runnable row).
-- SKIP LOCKED lets workers claim side by side without waiting on each other. The locking CTE is
-- materialized so it runs once and the limits hold (Oban's fetch_jobs comment explains the trap).
-- The update finds its rows with id = any(array(...)): written as a join, the planner hashed
-- the whole jobs table (a sequential scan per claim) whenever it thought the table small.
-- A job enqueued without max_attempts gets its task's own setting stamped here (the worker
-- knows its tasks; the reaper does not), so every later decision sees it.
--
-- Queue policy (`allowed`, the SQL twin of _core.decisions.claim_allowance, which the in-memory
-- backend calls): a queue without a policy row gives what was asked. A paused queue,
-- or one whose circuit is open and cooling down, gives nothing. A queue with a cap, a rate or
-- a circuit gives jobs only when it is among `guarded`, whose policy rows `bumped` updates:
-- the row lock makes guarded claims of one queue take turns, and the counter tells a claim
-- whether another one committed after this statement's snapshot was taken (the row's latest
-- `claims` is then more than one ahead of the snapshot's). Such a claim cannot see that
-- claim's jobs in its running count or rate window, so it takes nothing from the queue and
-- says so with a row of id 0 (the backend claims again at once, with a fresh snapshot). A
-- claim that passes sees every job any earlier claim of the queue took: caps and rates are
-- exact across workers, in one statement and no explicit transaction.
-- The running count (cap, half-open probes) and the starts of the last period (rate) are read
-- only for queues that have those settings. The rate window is counted in buckets of a
-- twentieth of the period (_core.decisions.rate_window_s, which the in-memory backend uses).
-- Index: jobs_claim_idx (queue, priority, run_at, id) where state in ('queued', 'retrying');
-- jobs_leased_queue_idx (queue) where lease_expires_at is not null for the running count;
-- the primary keys of queues and queue_starts.
-- Plan seen on PG 15 and 18 with 200k rows: Nested Loop -> Function Scan on unnest ->
-- Limit -> LockRows -> Index Scan using jobs_claim_idx.
with wanted as (
    select w.queue, w.lim
      from unnest(%(queues)s::text[], %(limits)s::int[]) as w (queue, lim)
),
bumped as (
    update {schema}.queues as q
       set claims = q.claims + 1
     where q.name = any(%(guarded)s::text[])
 returning q.name, q.claims
),
allowed as (
    select wanted.queue,
           case
               when q.name is null then wanted.lim
               when q.paused then 0
               when q.concurrency is null and q.rate_limit is null and q.circuit_failures is null
                   then wanted.lim
               when b.name is null or b.claims <> q.claims + 1 then 0
               when q.circuit_failures is not null
                    and q.circuit_state = 'open'
                    and now() < q.circuit_since + make_interval(secs => q.circuit_cooldown_s)
                   then 0
               else greatest(0, least(
                   wanted.lim,
                   q.concurrency - r.running,
                   case when q.circuit_failures is not null and q.circuit_state <> 'closed'
                        then q.circuit_probes - r.running end,
                   q.rate_limit - s.starts))
           end as lim,
           coalesce(b.claims <> q.claims + 1, false) as stale,
           coalesce(q.circuit_failures is not null and q.circuit_state <> 'closed', false)
               as probe,
           q.rate_per_s
      from wanted
      left join {schema}.queues as q
        on q.name = wanted.queue
      left join bumped as b
        on b.name = wanted.queue
      left join lateral (
        select count(*)::int as running
          from {schema}.jobs as j
         where j.queue = wanted.queue
           and j.lease_expires_at is not null
           and (q.concurrency is not null or q.circuit_state <> 'closed')
      ) as r on true
      left join lateral (
        select coalesce(sum(qs.starts), 0)::int as starts
          from {schema}.queue_starts as qs
         where qs.queue = wanted.queue
           and q.rate_limit is not null
           and qs.bucket_at > now() - make_interval(secs => q.rate_per_s * 1.05)
      ) as s on true
),
picked as materialized (
    select p.id, p.state as from_state, allowed.probe
      from allowed
     cross join lateral (
        select j.id, j.state
          from {schema}.jobs as j
         where j.queue = allowed.queue
           and j.state in ('queued', 'retrying')
           and j.run_at <= now()
         order by j.priority, j.run_at, j.id
         limit allowed.lim
           for update skip locked
     ) as p
     where allowed.lim > 0
),
claimed as (
    update {schema}.jobs as j
       set state = 'running',
           attempt = j.attempt + 1,
           worker_id = %(worker_id)s,
           lease_expires_at = now() + make_interval(secs => %(lease_s)s),
           max_attempts = coalesce(
               j.max_attempts,
               (select t.m
                  from unnest(%(task_names)s::text[], %(task_max_attempts)s::int[]) as t (n, m)
                 where t.n = j.task))
     where j.id = any(array(select picked.id from picked))
 returning j.id, j.queue, j.task, j.args, j.attempt, j.max_attempts
),
logged as (
    insert into {schema}.job_events (job_id, from_state, to_state, attempt, worker_id)
    select claimed.id, picked.from_state, 'running', claimed.attempt, %(worker_id)s
      from claimed
      join picked
        on picked.id = claimed.id
),
rated as (
    insert into {schema}.queue_starts as qs (queue, bucket_at, starts)
    select claimed.queue,
           date_bin(make_interval(secs => allowed.rate_per_s / 20), now(),
                    timestamptz '1970-01-01 00:00:00+00'),
           count(*)
      from claimed
      join allowed
        on allowed.queue = claimed.queue
     where allowed.rate_per_s is not null
     group by claimed.queue, allowed.rate_per_s
        on conflict (queue, bucket_at) do update set starts = qs.starts + excluded.starts
)
select claimed.id, claimed.queue, claimed.task, claimed.args, claimed.attempt,
       claimed.max_attempts, %(worker_id)s::text as worker_id, picked.probe
  from claimed
  join picked
    on picked.id = claimed.id
 union all
select 0, allowed.queue, '', null, 0, null, %(worker_id)s::text, false
  from allowed
 where allowed.stale;

-- name: claim_plain
-- `claim` for queues that had no policy row when the worker last looked (every second): the
-- same claim without the policy work, which cost about 0.2 ms of a 1.4 ms claim. A queue that
-- has a row by now (a pause from the CLI, a worker's config) gives nothing here; the worker
-- sees the row within a second and claims it with `claim` from then on.
-- Index: jobs_claim_idx as `claim`; queues_pkey for the row check.
with wanted as (
    select w.queue, w.lim
      from unnest(%(queues)s::text[], %(limits)s::int[]) as w (queue, lim)
     where not exists (select 1 from {schema}.queues as q where q.name = w.queue)
),
picked as materialized (
    select p.id, p.state as from_state
      from wanted
     cross join lateral (
        select j.id, j.state
          from {schema}.jobs as j
         where j.queue = wanted.queue
           and j.state in ('queued', 'retrying')
           and j.run_at <= now()
         order by j.priority, j.run_at, j.id
         limit wanted.lim
           for update skip locked
     ) as p
),
claimed as (
    update {schema}.jobs as j
       set state = 'running',
           attempt = j.attempt + 1,
           worker_id = %(worker_id)s,
           lease_expires_at = now() + make_interval(secs => %(lease_s)s),
           max_attempts = coalesce(
               j.max_attempts,
               (select t.m
                  from unnest(%(task_names)s::text[], %(task_max_attempts)s::int[]) as t (n, m)
                 where t.n = j.task))
     where j.id = any(array(select picked.id from picked))
 returning j.id, j.queue, j.task, j.args, j.attempt, j.max_attempts
),
logged as (
    insert into {schema}.job_events (job_id, from_state, to_state, attempt, worker_id)
    select claimed.id, picked.from_state, 'running', claimed.attempt, %(worker_id)s
      from claimed
      join picked
        on picked.id = claimed.id
)
select id, queue, task, args, attempt, max_attempts, %(worker_id)s::text as worker_id,
       false as probe
  from claimed;

-- name: extend_leases
-- The heartbeat: one statement extends every lease a worker holds. Fenced: a lease the reaper
-- took back (other attempt, or no longer running) is not extended and does not come back, which
-- is how the worker learns it lost it.
-- Index: the primary key, through id = any(ids); each row's attempt is looked up by its
-- position in the batch (no join, so no join order for the planner to get wrong).
update {schema}.jobs as j
   set lease_expires_at = now() + make_interval(secs => %(lease_s)s)
 where j.id = any(%(ids)s::bigint[])
   and j.attempt = (%(attempts)s::int[])[array_position(%(ids)s::bigint[], j.id)]
   and j.worker_id = %(worker_id)s
   and j.state = 'running'
returning j.id, j.attempt;

-- name: complete_many
-- Marks a batch of finished jobs completed in one statement, fenced on (id, attempt, worker_id,
-- state = 'running'). A job whose lease was lost is left alone; its late result is written as a
-- `discarded` event instead, its text from _core.decisions.discarded_error (`discarded` is
-- that function's prefix).
-- The state guard is on `state` while the lease index's predicate is `lease_expires_at is not
-- null`: no guard here implies a partial index's predicate, so even a generic plan over stale
-- statistics joins through the primary key (a plan over a partial index took seconds per batch).
-- Rows are found with id = any(ids) and each attempt by its position in the batch, with no join:
-- joined to the unnested batch, the planner chose a sequential scan inside a nested loop.
-- Index: the primary key.
with done as (
    update {schema}.jobs as j
       set state = 'completed',
           finished_at = now(),
           lease_expires_at = null
     where j.id = any(%(ids)s::bigint[])
       and j.attempt = (%(attempts)s::int[])[array_position(%(ids)s::bigint[], j.id)]
       and j.worker_id = %(worker_id)s
       and j.state = 'running'
 returning j.id, j.attempt
),
logged as (
    insert into {schema}.job_events (job_id, from_state, to_state, attempt, worker_id)
    select id, 'running', 'completed', attempt, %(worker_id)s
      from done
),
discarded as (
    insert into {schema}.job_events (job_id, from_state, to_state, attempt, worker_id, error)
    select l.id,
           (select j.state from {schema}.jobs as j where j.id = l.id),
           'discarded', l.attempt, %(worker_id)s, %(discarded)s::text || 'completed'
      from unnest(%(ids)s::bigint[], %(attempts)s::int[]) as l (id, attempt)
     where l.id not in (select done.id from done)
)
select id, attempt
  from done;

-- name: fail
-- Records a failed attempt, fenced like complete_many: to `retrying` after `delay_s` seconds
-- (database clock), or to `dead`. A late failure from a worker that lost its lease is written as
-- a `discarded` event and changes nothing else (`discarded`: as complete_many's).
-- Index: the primary key.
with failed as (
    update {schema}.jobs as j
       set state = %(to_state)s::text,
           run_at = case when %(to_state)s::text = 'retrying'
                         then now() + make_interval(secs => %(delay_s)s)
                         else j.run_at end,
           finished_at = case when %(to_state)s::text = 'dead' then now() end,
           last_error = %(error)s,
           lease_expires_at = null
     where j.id = %(job_id)s
       and j.attempt = %(attempt)s
       and j.worker_id = %(worker_id)s
       and j.state = 'running'
 returning j.id, j.attempt
),
logged as (
    insert into {schema}.job_events (job_id, from_state, to_state, attempt, worker_id, error)
    select id, 'running', %(to_state)s::text, attempt, %(worker_id)s, %(error)s
      from failed
),
discarded as (
    insert into {schema}.job_events (job_id, from_state, to_state, attempt, worker_id, error)
    select j.id, j.state, 'discarded', %(attempt)s, %(worker_id)s,
           %(discarded)s::text || %(error)s::text
      from {schema}.jobs as j
     where j.id = %(job_id)s
       and not exists (select 1 from failed)
)
select count(*) as n
  from failed;

-- name: release
-- Hands back jobs a stopping worker claimed but never started: back to `queued`, and the claim
-- does not count as an attempt (attempt goes back down). Fenced like complete_many. `reason` is
-- _core.decisions.RELEASED_ON_SHUTDOWN.
-- Index: the primary key.
with released as (
    update {schema}.jobs as j
       set state = 'queued',
           attempt = j.attempt - 1,
           lease_expires_at = null
     where j.id = any(%(ids)s::bigint[])
       and j.attempt = (%(attempts)s::int[])[array_position(%(ids)s::bigint[], j.id)]
       and j.worker_id = %(worker_id)s
       and j.state = 'running'
 returning j.id, j.attempt, j.queue
),
logged as (
    insert into {schema}.job_events (job_id, from_state, to_state, attempt, worker_id, error)
    select id, 'running', 'queued', attempt, %(worker_id)s, %(reason)s::text
      from released
),
notified as (
    select count(pg_notify(%(channel)s, q.queue)) as n
      from (select distinct queue from released) as q
)
select count(*) as n
  from released
 cross join notified;

-- name: reap_expired
-- Takes back running jobs whose lease expired (their worker died, froze or lost its database):
-- to `retrying`, runnable at once, or to `dead` when that was the last attempt (the rule of
-- _core.domain.after_lease_expired, with max_attempts by _core.decisions.first_set: the job's,
-- then its queue's, then the default; kept in step by tests/contract/test_decisions_contract.py).
-- The error names the worker and when it was last seen: _core.decisions.lease_expired_error
-- builds the same text for the in-memory backend. SKIP LOCKED makes it safe for every worker to run it at once.
-- A job that carries no max_attempts of its own (nor its task's) takes its queue's policy.
-- Returns how many jobs it took back per queue (the worker counts them toward circuits).
-- Index: jobs_leased_queue_idx (queue) where lease_expires_at is not null: every leased row,
-- a few per worker slot, however large the table.
-- Plan seen: Limit -> LockRows -> Sort -> Index Scan using jobs_leased_queue_idx.
with expired as materialized (
    select j.id
      from {schema}.jobs as j
     where j.lease_expires_at < now()
       and j.state = 'running'
     order by j.lease_expires_at
     limit %(limit)s
       for update skip locked
),
reaped as (
    update {schema}.jobs as j
       set state = case when j.attempt >= coalesce(j.max_attempts, (
                                select qp.max_attempts
                                  from {schema}.queues as qp
                                 where qp.name = j.queue), %(default_max_attempts)s)
                        then 'dead' else 'retrying' end,
           run_at = now(),
           finished_at = case when j.attempt >= coalesce(j.max_attempts, (
                                      select qp.max_attempts
                                        from {schema}.queues as qp
                                       where qp.name = j.queue), %(default_max_attempts)s)
                              then now() end,
           lease_expires_at = null,
           last_error = 'lease expired: worker ' || coalesce(j.worker_id, 'unknown')
               || ' last seen '
               || coalesce(
                      (select to_char(w.last_seen_at at time zone 'UTC',
                                      'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
                         from {schema}.workers as w
                        where w.id = j.worker_id),
                      'never (worker gone)')
               || ', lease ran out at '
               || to_char(j.lease_expires_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
     where j.id = any(array(select expired.id from expired))
 returning j.id, j.queue, j.state, j.attempt, j.worker_id, j.last_error
),
logged as (
    insert into {schema}.job_events (job_id, from_state, to_state, attempt, worker_id, error)
    select id, 'running', state, attempt, worker_id, last_error
      from reaped
),
notified as (
    select count(pg_notify(%(channel)s, q.queue)) as n
      from (select distinct queue from reaped where state = 'retrying') as q
)
select reaped.queue, count(*)::int as n
  from reaped
 cross join notified
 group by reaped.queue;

-- name: get_job
-- One job by id. Index: the primary key.
select id, queue, task, args, state, attempt, max_attempts, last_error, run_at, created_at,
       finished_at, priority, idempotency_key, worker_id, lease_expires_at
  from {schema}.jobs
 where id = %(job_id)s;

-- name: job_events
-- The timeline of some jobs, oldest first. Index: job_events_pkey (job_id, id).
select job_id, from_state, to_state, attempt, at, worker_id, error
  from {schema}.job_events
 where job_id = any(%(job_ids)s::bigint[])
 order by job_id, id;

-- name: list_jobs
-- Newest jobs first, optionally of one queue and/or one state. Not on the hot path: the
-- primary key walks backwards and the filters apply as it goes.
select id, queue, task, args, state, attempt, max_attempts, last_error, run_at, created_at,
       finished_at, priority, idempotency_key, worker_id, lease_expires_at
  from {schema}.jobs
 where (%(queue)s::text is null or queue = %(queue)s::text)
   and (%(state)s::text is null or state = %(state)s::text)
 order by id desc
 limit %(limit)s;

-- name: retry_job
-- An operator's replay: a dead or cancelled job back to `queued`, runnable now, with a fresh set
-- of attempts. The states it may come from are passed in from _domain.TRANSITIONS.
with moved as (
    update {schema}.jobs as j
       set state = 'queued',
           attempt = 0,
           run_at = now(),
           finished_at = null,
           lease_expires_at = null
      from (select state from {schema}.jobs where id = %(job_id)s for update) as before
     where j.id = %(job_id)s
       and j.state = any(%(from_states)s::text[])
 returning j.id, j.queue, before.state as from_state
),
logged as (
    insert into {schema}.job_events (job_id, from_state, to_state, attempt, error)
    select id, from_state, 'queued', 0, 'replayed by an operator'
      from moved
),
notified as (
    select count(pg_notify(%(channel)s, queue)) as n
      from moved
)
select id
  from moved
 cross join notified;

-- name: cancel_job
-- An operator's cancel: a queued or retrying job to `cancelled`. A running job cannot be
-- cancelled (DESIGN.md's state table); the states it may come from are passed in from
-- _domain.TRANSITIONS.
with moved as (
    update {schema}.jobs as j
       set state = 'cancelled',
           finished_at = now()
      from (select state from {schema}.jobs where id = %(job_id)s for update) as before
     where j.id = %(job_id)s
       and j.state = any(%(from_states)s::text[])
 returning j.id, j.attempt, before.state as from_state
),
logged as (
    insert into {schema}.job_events (job_id, from_state, to_state, attempt, error)
    select id, from_state, 'cancelled', attempt, 'cancelled by an operator'
      from moved
)
select id
  from moved;

-- name: job_state
-- Why retry_job or cancel_job changed nothing: the job's state, or no row.
select state
  from {schema}.jobs
 where id = %(job_id)s;

-- name: runnable_queues
-- The queues that have runnable jobs (due now or later), for a worker that serves every queue.
-- A loose index scan: one short descent of jobs_claim_idx per distinct queue, however many
-- jobs each holds.
with recursive q (queue) as (
    (select queue
       from {schema}.jobs
      where state in ('queued', 'retrying')
      order by queue
      limit 1)
    union all
    select (select j.queue
              from {schema}.jobs as j
             where j.state in ('queued', 'retrying')
               and j.queue > q.queue
             order by j.queue
             limit 1)
      from q
     where q.queue is not null
)
select queue
  from q
 where queue is not null;

-- name: next_due_in
-- Seconds until the earliest runnable job of some queues (negative: due already), or null.
-- Used by burst mode when idle. Index: jobs_claim_idx, one queue at a time.
select extract(epoch from min(d.run_at) - now())::float8 as due_in_s
  from unnest(%(queues)s::text[]) as w (queue)
 cross join lateral (
    select min(j.run_at) as run_at
      from {schema}.jobs as j
     where j.queue = w.queue
       and j.state in ('queued', 'retrying')
 ) as d;

-- name: register_worker
-- A worker announces itself at start; its row is its heartbeat for the reaper's error messages
-- and for observability.
insert into {schema}.workers (id, hostname, pid, queues, concurrency)
values (%(worker_id)s, %(hostname)s, %(pid)s, %(queues)s, %(concurrency)s)
    on conflict (id) do update
   set last_seen_at = now();

-- name: worker_heartbeat
-- Marks a worker alive. Index: the primary key.
update {schema}.workers
   set last_seen_at = now()
 where id = %(worker_id)s;

-- name: deregister_worker
-- A worker that stops cleanly removes its row.
delete from {schema}.workers
 where id = %(worker_id)s;

-- name: prune_workers
-- Forgets workers not seen for an hour (they died); the reaper runs it with the lease reaping.
delete from {schema}.workers
 where last_seen_at < now() - interval '1 hour';

-- name: check_schema
-- A worker's start-up check that `pgq migrate` has run: fails with undefined_table otherwise.
select 1
  from {schema}.jobs
 limit 0;

-- name: write_policy
-- Stores one queue's policy, as a worker's config declares it (at start). A row that already
-- holds these values is left alone, so workers restarting with the same config write no event.
-- The paused flag and the circuit's state are not touched here (set_paused and the circuit
-- statements own them).
-- Index: queues_pkey.
with written as (
    insert into {schema}.queues as q
           (name, concurrency, rate_limit, rate_per_s, circuit_failures, circuit_window_s,
            circuit_cooldown_s, circuit_probes, circuit_on, max_attempts, backoff_base_s,
            backoff_cap_s, timeout_s, retention_completed_s, retention_dead_s, updated_by)
    values (%(name)s, %(concurrency)s, %(rate_limit)s, %(rate_per_s)s, %(circuit_failures)s,
            %(circuit_window_s)s, %(circuit_cooldown_s)s, %(circuit_probes)s, %(circuit_on)s,
            %(max_attempts)s, %(backoff_base_s)s, %(backoff_cap_s)s, %(timeout_s)s,
            %(retention_completed_s)s, %(retention_dead_s)s, %(worker_id)s)
        on conflict (name) do update
       set concurrency = excluded.concurrency,
           rate_limit = excluded.rate_limit,
           rate_per_s = excluded.rate_per_s,
           circuit_failures = excluded.circuit_failures,
           circuit_window_s = excluded.circuit_window_s,
           circuit_cooldown_s = excluded.circuit_cooldown_s,
           circuit_probes = excluded.circuit_probes,
           circuit_on = excluded.circuit_on,
           max_attempts = excluded.max_attempts,
           backoff_base_s = excluded.backoff_base_s,
           backoff_cap_s = excluded.backoff_cap_s,
           timeout_s = excluded.timeout_s,
           retention_completed_s = excluded.retention_completed_s,
           retention_dead_s = excluded.retention_dead_s,
           updated_at = now(),
           updated_by = excluded.updated_by
     where (q.concurrency, q.rate_limit, q.rate_per_s, q.circuit_failures, q.circuit_window_s,
            q.circuit_cooldown_s, q.circuit_probes, q.circuit_on, q.max_attempts,
            q.backoff_base_s, q.backoff_cap_s, q.timeout_s, q.retention_completed_s,
            q.retention_dead_s)
           is distinct from
           (excluded.concurrency, excluded.rate_limit, excluded.rate_per_s,
            excluded.circuit_failures, excluded.circuit_window_s, excluded.circuit_cooldown_s,
            excluded.circuit_probes, excluded.circuit_on, excluded.max_attempts,
            excluded.backoff_base_s, excluded.backoff_cap_s, excluded.timeout_s,
            excluded.retention_completed_s, excluded.retention_dead_s)
 returning q.name
)
insert into {schema}.queue_events (queue, kind, reason, worker_id)
select name, 'policy', 'policy written', %(worker_id)s
  from written;

-- name: write_live_policy
-- Stores the settings a reloaded config applies to running workers (max_attempts, backoff,
-- rate, retention) and leaves the restart-only ones (cap, timeout, circuit) as they were.
-- Index: queues_pkey.
with written as (
    insert into {schema}.queues as q
           (name, rate_limit, rate_per_s, max_attempts, backoff_base_s, backoff_cap_s,
            retention_completed_s, retention_dead_s, updated_by)
    values (%(name)s, %(rate_limit)s, %(rate_per_s)s, %(max_attempts)s, %(backoff_base_s)s,
            %(backoff_cap_s)s, %(retention_completed_s)s, %(retention_dead_s)s, %(worker_id)s)
        on conflict (name) do update
       set rate_limit = excluded.rate_limit,
           rate_per_s = excluded.rate_per_s,
           max_attempts = excluded.max_attempts,
           backoff_base_s = excluded.backoff_base_s,
           backoff_cap_s = excluded.backoff_cap_s,
           retention_completed_s = excluded.retention_completed_s,
           retention_dead_s = excluded.retention_dead_s,
           updated_at = now(),
           updated_by = excluded.updated_by
     where (q.rate_limit, q.rate_per_s, q.max_attempts, q.backoff_base_s, q.backoff_cap_s,
            q.retention_completed_s, q.retention_dead_s)
           is distinct from
           (excluded.rate_limit, excluded.rate_per_s, excluded.max_attempts,
            excluded.backoff_base_s, excluded.backoff_cap_s, excluded.retention_completed_s,
            excluded.retention_dead_s)
 returning q.name
)
insert into {schema}.queue_events (queue, kind, reason, worker_id)
select name, 'policy', 'live settings reloaded', %(worker_id)s
  from written;

-- name: read_policies
-- Every queue's stored policy, for workers (which queues a claim must guard, the live retry
-- settings) and for `pgq queues`. The table holds one row per queue with a policy: small.
select name, concurrency, rate_limit, rate_per_s, circuit_failures, circuit_window_s,
       circuit_cooldown_s, circuit_probes, circuit_on, max_attempts, backoff_base_s,
       backoff_cap_s, timeout_s, retention_completed_s, retention_dead_s, paused,
       circuit_state, circuit_since, circuit_reason, now() as now
  from {schema}.queues
 order by name;

-- name: set_paused
-- Pauses or resumes a queue, creating its row on a pause if it has none. Every claim that
-- starts after this commits reads the flag. Resuming wakes idle workers.
-- Index: queues_pkey.
with updated as (
    update {schema}.queues
       set paused = %(paused)s,
           updated_at = now(),
           updated_by = %(by)s
     where name = %(queue)s
       and paused <> %(paused)s
 returning name
),
inserted as (
    insert into {schema}.queues (name, paused, updated_by)
    select %(queue)s, true, %(by)s
     where %(paused)s
       and not exists (select 1 from {schema}.queues where name = %(queue)s)
        on conflict (name) do nothing
 returning name
),
changed as (
    select name from updated
     union all
    select name from inserted
),
logged as (
    insert into {schema}.queue_events (queue, kind, worker_id)
    select name, case when %(paused)s then 'paused' else 'resumed' end, %(by)s
      from changed
),
notified as (
    select count(pg_notify(%(channel)s, name)) as n
      from changed
     where not %(paused)s
)
select count(*)::int as n
  from changed
 cross join notified;

-- name: circuit_for_update
-- Locks a queue's circuit and reads it, with the database clock, so that the worker can apply
-- _domain.circuit_after_failures / circuit_after_success and write the result back in the
-- same transaction (circuit_write). Failures are rare next to claims; this is not a hot path.
-- Index: queues_pkey.
select circuit_state, circuit_since, circuit_recent, circuit_reason, circuit_failures,
       circuit_window_s, circuit_cooldown_s, now() as now
  from {schema}.queues
 where name = %(queue)s
   and circuit_failures is not null
   for update;

-- name: circuit_write
-- Writes a circuit back (see circuit_for_update), with an event when its state moved; a
-- circuit that closed or half-opened wakes idle workers.
-- Index: queues_pkey.
with written as (
    update {schema}.queues
       set circuit_state = %(state)s,
           circuit_since = %(since)s,
           circuit_recent = %(recent)s::timestamptz[],
           circuit_reason = %(reason)s
     where name = %(queue)s
 returning name
),
logged as (
    insert into {schema}.queue_events (queue, kind, from_state, to_state, reason, worker_id)
    select name, 'circuit', %(from_state)s, %(state)s, %(reason)s, %(worker_id)s
      from written
     where %(from_state)s::text is not null
)
select count(pg_notify(%(channel)s, name))::int as n
  from written
 where %(state)s <> 'open'
   and %(from_state)s::text is not null;

-- name: advance_circuits
-- Records open circuits whose cooldown has passed as half-open (claims already treat them so:
-- this writes the transition and its event, and wakes idle workers to send the probes).
-- Row locks make it safe for every worker to run it at once; they are taken in name order, as
-- claims take them (`bumped`, guarded queues sorted by name), so the two never wait on each
-- other in a cycle.
-- Index: a sequential scan of queues, one row per queue with a policy.
with due as (
    update {schema}.queues
       set circuit_state = 'half_open',
           circuit_since = circuit_since + make_interval(secs => circuit_cooldown_s),
           circuit_reason = 'cooldown of ' || circuit_cooldown_s::text || 's passed'
     where name in (
            select name
              from {schema}.queues
             where circuit_failures is not null
               and circuit_state = 'open'
               and now() >= circuit_since + make_interval(secs => circuit_cooldown_s)
             order by name
               for update)
       and circuit_state = 'open'
 returning name, circuit_reason
),
logged as (
    insert into {schema}.queue_events (queue, kind, from_state, to_state, reason)
    select name, 'circuit', 'open', 'half_open', circuit_reason
      from due
),
notified as (
    select count(pg_notify(%(channel)s, name)) as n
      from due
)
select count(*)::int as n
  from due
 cross join notified;

-- name: prune_finished
-- Deletes finished jobs past their queue's retention (completed: retention_completed_s,
-- default 1 day; dead and cancelled: retention_dead_s, default 14 days: the rule of
-- _core.decisions.retention_s, whose defaults are passed in), with their events,
-- at most `limit` per queue and state per call: small batches that hold few locks and leave
-- little for vacuum at once. The queues come from a loose index scan of jobs_finished_idx;
-- SKIP LOCKED lets every worker run it at once. It also drops rate-limit buckets that no
-- window reaches any more.
-- Index: jobs_finished_idx (queue, state, finished_at) where finished_at is not null;
-- job_events_pkey (job_id, id) for the events.
with recursive finished (queue) as (
    (select queue
       from {schema}.jobs
      where finished_at is not null
      order by queue
      limit 1)
    union all
    select (select j.queue
              from {schema}.jobs as j
             where j.finished_at is not null
               and j.queue > finished.queue
             order by j.queue
             limit 1)
      from finished
     where finished.queue is not null
),
kept as (
    select f.queue, s.state,
           case when s.state = 'completed'
                then coalesce(q.retention_completed_s, %(completed_s)s)
                else coalesce(q.retention_dead_s, %(dead_s)s) end as keep_s
      from finished as f
     cross join (values ('completed'), ('dead'), ('cancelled')) as s (state)
      left join {schema}.queues as q
        on q.name = f.queue
     where f.queue is not null
),
doomed as materialized (
    select d.id
      from kept
     cross join lateral (
        select j.id
          from {schema}.jobs as j
         where j.queue = kept.queue
           and j.state = kept.state
           and j.finished_at is not null
           and j.finished_at < now() - make_interval(secs => kept.keep_s)
         order by j.finished_at
         limit %(limit)s
           for update skip locked
     ) as d
),
events_gone as (
    delete from {schema}.job_events
     where job_id = any(array(select doomed.id from doomed))
),
jobs_gone as (
    delete from {schema}.jobs
     where id = any(array(select doomed.id from doomed))
 returning id
),
buckets_gone as (
    delete from {schema}.queue_starts as qs
     where qs.bucket_at < now() - make_interval(secs => 1 + 1.05 * coalesce(
               (select q.rate_per_s from {schema}.queues as q where q.name = qs.queue), 0))
)
select count(*)::int as n
  from jobs_gone;

-- name: list_queues
-- Jobs per queue and state, and each queue's oldest runnable job, for `pgq queues`: one pass
-- over the jobs table (an operator's command, not a hot path; retention keeps the table small).
select queue, state, count(*)::int as n,
       extract(epoch from now() - min(run_at) filter (where run_at <= now()))::float8
  from {schema}.jobs
 group by queue, state;

-- name: queue_events
-- The latest changes of each queue (circuit, pause, policy), newest first, for `pgq queues`.
-- Index: queue_events_pkey (queue, id).
select e.queue, e.kind, e.at, e.from_state, e.to_state, e.reason, e.worker_id
  from unnest(%(queues)s::text[]) as q (name)
 cross join lateral (
    select ev.queue, ev.kind, ev.at, ev.from_state, ev.to_state, ev.reason, ev.worker_id, ev.id
      from {schema}.queue_events as ev
     where ev.queue = q.name
     order by ev.id desc
     limit %(limit)s
 ) as e
 order by e.queue, e.id desc;

-- name: restart_notes
-- What live workers refused to apply from a reloaded config, for `pgq queues`. A worker that
-- has not been seen for 10 minutes is gone (killed): its note no longer applies.
select restart_required
  from {schema}.workers
 where restart_required is not null
   and last_seen_at > now() - interval '10 minutes';

-- name: report_restart_required
-- Records what this worker refused to apply from a reloaded config (null: nothing).
-- Index: workers_pkey.
update {schema}.workers
   set restart_required = %(changes)s
 where id = %(worker_id)s;
