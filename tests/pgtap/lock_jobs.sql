-- conveyor.lock_jobs(queues, max_jobs, max_priority, held)
--
-- Each scenario uses its own queues: a session-level lock taken here (and the
-- transaction-level lock a release leaves behind) lasts until the test's
-- session or transaction ends, so no scenario can lock another's jobs.
-- Two-session behaviour (skipping jobs another session holds) is tested from
-- pytest with two connections.
BEGIN;
SELECT plan(62);

SELECT has_function('conveyor', 'lock_jobs', ARRAY['text[]', 'integer', 'integer', 'bigint[]'],
  'conveyor.lock_jobs(text[], integer, integer, bigint[]) exists');
SELECT function_returns('conveyor', 'lock_jobs', ARRAY['text[]', 'integer', 'integer', 'bigint[]'], 'setof conveyor.jobs',
  'conveyor.lock_jobs returns SETOF conveyor.jobs');

CREATE TEMP TABLE fx (name text PRIMARY KEY, id bigint NOT NULL);

-- Order: priority, then run_at, then id ----------------------------------------

INSERT INTO fx SELECT 'order_p10_old', id FROM conveyor.enqueue('tap.lock.Order', queue => 'tap_lock_order', priority => 10, run_at => now() - interval '1 hour');
INSERT INTO fx SELECT 'order_p5_new', id FROM conveyor.enqueue('tap.lock.Order', queue => 'tap_lock_order', priority => 5, run_at => now() - interval '1 minute');
INSERT INTO fx SELECT 'order_p5_old', id FROM conveyor.enqueue('tap.lock.Order', queue => 'tap_lock_order', priority => 5, run_at => now() - interval '2 hours');
INSERT INTO fx SELECT 'order_p10_old_2', id FROM conveyor.enqueue('tap.lock.Order', queue => 'tap_lock_order', priority => 10, run_at => now() - interval '1 hour');
INSERT INTO fx SELECT 'order_p0_now', id FROM conveyor.enqueue('tap.lock.Order', queue => 'tap_lock_order', priority => 0);

CREATE TEMP TABLE t_order AS
  SELECT j.ordinality AS n, j.* FROM conveyor.lock_jobs(ARRAY['tap_lock_order'], 10) WITH ORDINALITY AS j;

SELECT results_eq(
  $$SELECT f.name FROM t_order AS t JOIN fx AS f ON f.id = t.id ORDER BY t.n$$,
  ARRAY['order_p0_now', 'order_p5_old', 'order_p5_new', 'order_p10_old', 'order_p10_old_2'],
  'lock_jobs returns jobs by priority, then run_at, then id');

SELECT results_eq(
  $$SELECT t.id, t.priority, t.run_at, t.job_class, t.queue, t.args, t.data, t.error_count,
           t.maximum_retry_count, t.last_error_message, t.last_error_backtrace, t.finished_at,
           t.expired_at, t.created_at, t.unique_key, t.concurrency_key, t.labels, t.batch_id
      FROM t_order AS t ORDER BY t.id$$,
  $$SELECT * FROM conveyor.jobs WHERE queue = 'tap_lock_order' ORDER BY id$$,
  'lock_jobs returns the full, unchanged job rows');

SELECT is(
  ARRAY(SELECT l.objid::bigint FROM pg_catalog.pg_locks AS l
         WHERE l.locktype = 'advisory' AND l.pid = pg_catalog.pg_backend_pid() AND l.granted
           AND l.classid = 1129270870 AND l.objsubid = 2 AND l.mode = 'ExclusiveLock'
           AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())
           AND l.objid::bigint IN (SELECT id FROM t_order)
         ORDER BY 1),
  ARRAY(SELECT id FROM t_order ORDER BY id),
  'each locked job shows in pg_locks as an advisory lock with classid 1129270870, objid = id, objsubid 2');

SELECT is((SELECT count(*) FROM pg_catalog.pg_locks AS l
            WHERE l.locktype = 'advisory' AND l.pid = pg_catalog.pg_backend_pid()
              AND l.objsubid = 1 AND l.objid::bigint IN (SELECT id FROM t_order)),
          0::bigint, 'lock_jobs takes no single-bigint (objsubid 1) advisory locks');

SELECT is((SELECT count(*) FROM conveyor.lock_jobs(ARRAY['tap_lock_order'], 10)), 0::bigint,
  'jobs this session already holds are not returned a second time');

-- The walk picks by (priority, run_at, id), not only sorts what it picked.
INSERT INTO fx SELECT 'pick_p5_newer', id FROM conveyor.enqueue('tap.lock.Pick', queue => 'tap_lock_pick', priority => 5, run_at => now() - interval '1 minute');
INSERT INTO fx SELECT 'pick_p5_older', id FROM conveyor.enqueue('tap.lock.Pick', queue => 'tap_lock_pick', priority => 5, run_at => now() - interval '1 hour');
INSERT INTO fx SELECT 'pick_p6_oldest', id FROM conveyor.enqueue('tap.lock.Pick', queue => 'tap_lock_pick', priority => 6, run_at => now() - interval '1 day');
INSERT INTO fx SELECT 'pick_p5_older_2', id FROM conveyor.enqueue('tap.lock.Pick', queue => 'tap_lock_pick', priority => 5, run_at => now() - interval '1 hour');

SELECT results_eq($$SELECT f.name FROM conveyor.lock_jobs(ARRAY['tap_lock_pick'], 1) AS j JOIN fx AS f ON f.id = j.id$$,
  ARRAY['pick_p5_older'], 'max_jobs => 1 takes the oldest run_at within the most urgent priority, though its id is larger');
SELECT results_eq($$SELECT f.name FROM conveyor.lock_jobs(ARRAY['tap_lock_pick'], 1) AS j JOIN fx AS f ON f.id = j.id$$,
  ARRAY['pick_p5_older_2'], 'then the same run_at with the next id');
SELECT results_eq($$SELECT f.name FROM conveyor.lock_jobs(ARRAY['tap_lock_pick'], 1) AS j JOIN fx AS f ON f.id = j.id$$,
  ARRAY['pick_p5_newer'], 'then a newer job of the same priority before an older job of a less urgent one');

-- Defaults: queue ''default'', one job -------------------------------------------

INSERT INTO fx SELECT 'default_1', id FROM conveyor.enqueue('tap.lock.Default', priority => 0, run_at => '-infinity');
INSERT INTO fx SELECT 'default_2', id FROM conveyor.enqueue('tap.lock.Default', priority => 0, run_at => '-infinity');

SELECT results_eq(
  $$SELECT id FROM conveyor.lock_jobs()$$,
  $$SELECT id FROM fx WHERE name = 'default_1'$$,
  'lock_jobs() with no arguments locks one job, the most urgent in queue ''default''');

-- max_jobs ----------------------------------------------------------------------

INSERT INTO fx SELECT 'max_' || g, id FROM generate_series(1, 5) AS g,
  LATERAL conveyor.enqueue('tap.lock.Max', queue => 'tap_lock_max', priority => g);

SELECT results_eq($$SELECT id FROM conveyor.lock_jobs(ARRAY['tap_lock_max'], 2)$$,
  $$SELECT id FROM fx WHERE name IN ('max_1', 'max_2') ORDER BY id$$,
  'max_jobs => 2 locks the two most urgent jobs');
SELECT results_eq($$SELECT id FROM conveyor.lock_jobs(ARRAY['tap_lock_max'], 2)$$,
  $$SELECT id FROM fx WHERE name IN ('max_3', 'max_4') ORDER BY id$$,
  'a second call skips the held jobs and locks the next two');
SELECT results_eq($$SELECT id FROM conveyor.lock_jobs(ARRAY['tap_lock_max'], 10)$$,
  $$SELECT id FROM fx WHERE name = 'max_5'$$,
  'max_jobs larger than what is left locks what is left');
SELECT is((SELECT count(*) FROM conveyor.lock_jobs(ARRAY['tap_lock_max'], 10)), 0::bigint,
  'nothing is left to lock once every job is held');

INSERT INTO fx SELECT 'zero', id FROM conveyor.enqueue('tap.lock.Zero', queue => 'tap_lock_zero');
SELECT is((SELECT count(*) FROM conveyor.lock_jobs(ARRAY['tap_lock_zero'], 0)), 0::bigint,
  'max_jobs => 0 locks nothing');
SELECT is((SELECT count(*) FROM pg_catalog.pg_locks
            WHERE locktype = 'advisory' AND objsubid = 2 AND pid = pg_catalog.pg_backend_pid()
              AND objid::bigint = (SELECT id FROM fx WHERE name = 'zero')),
  0::bigint, 'max_jobs => 0 takes no lock');

-- Queue filter ------------------------------------------------------------------

INSERT INTO fx SELECT 'qa_p' || p, id FROM unnest(ARRAY[1, 3, 5]) AS p,
  LATERAL conveyor.enqueue('tap.lock.Queue', queue => 'tap_lock_qa', priority => p);
INSERT INTO fx SELECT 'qb_p' || p, id FROM unnest(ARRAY[2, 4, 6]) AS p,
  LATERAL conveyor.enqueue('tap.lock.Queue', queue => 'tap_lock_qb', priority => p);
INSERT INTO fx SELECT 'qc_p0', id FROM conveyor.enqueue('tap.lock.Queue', queue => 'tap_lock_qc', priority => 0);

SELECT results_eq(
  $$SELECT f.name FROM conveyor.lock_jobs(ARRAY['tap_lock_qb'], 1) WITH ORDINALITY AS j JOIN fx AS f ON f.id = j.id ORDER BY j.ordinality$$,
  ARRAY['qb_p2'],
  'a single queue: only that queue''s jobs, even when another queue has more urgent ones');

CREATE TEMP TABLE t_merged AS
  SELECT j.ordinality AS n, j.id, j.queue FROM conveyor.lock_jobs(ARRAY['tap_lock_qa', 'tap_lock_qb'], 10) WITH ORDINALITY AS j;

SELECT results_eq(
  $$SELECT f.name FROM t_merged AS t JOIN fx AS f ON f.id = t.id ORDER BY t.n$$,
  ARRAY['qa_p1', 'qa_p3', 'qb_p4', 'qa_p5', 'qb_p6'],
  'several queues are merged in priority order (and the job already held is skipped)');

SELECT is((SELECT count(*) FROM t_merged WHERE queue = 'tap_lock_qc'), 0::bigint,
  'a queue not named is never locked from');

SELECT is((SELECT count(*) FROM conveyor.lock_jobs(ARRAY['tap_lock_qc', 'tap_lock_qc'], 10)), 1::bigint,
  'a queue named twice yields each job once');

SELECT is((SELECT count(*) FROM conveyor.lock_jobs(ARRAY['tap_lock_no_such_queue'], 10)), 0::bigint,
  'a queue without jobs locks nothing');

-- Several queues, max_jobs over all of them: the most urgent max_jobs are
-- locked, and no lock is left on the others.
INSERT INTO fx SELECT 'ma_p' || p, id FROM unnest(ARRAY[1, 4]) AS p,
  LATERAL conveyor.enqueue('tap.lock.Merge', queue => 'tap_lock_ma', priority => p);
INSERT INTO fx SELECT 'mb_p' || p, id FROM unnest(ARRAY[2, 3]) AS p,
  LATERAL conveyor.enqueue('tap.lock.Merge', queue => 'tap_lock_mb', priority => p);

SELECT results_eq(
  $$SELECT f.name FROM conveyor.lock_jobs(ARRAY['tap_lock_ma', 'tap_lock_mb'], 2) WITH ORDINALITY AS j
                        JOIN fx AS f ON f.id = j.id ORDER BY j.ordinality$$,
  ARRAY['ma_p1', 'mb_p2'],
  'max_jobs counts over all the queues: the two most urgent of both');
SELECT is(
  ARRAY(SELECT f.name FROM fx AS f JOIN pg_catalog.pg_locks AS l
           ON l.locktype = 'advisory' AND l.pid = pg_catalog.pg_backend_pid() AND l.objsubid = 2
          AND l.classid = 1129270870 AND l.objid::bigint = f.id
         WHERE f.name LIKE 'm_\_p%'
         ORDER BY f.name),
  ARRAY['ma_p1', 'mb_p2'],
  'only the returned jobs stay locked: none beyond max_jobs is left locked');
SELECT results_eq(
  $$SELECT f.name FROM conveyor.lock_jobs(ARRAY['tap_lock_mb', 'tap_lock_ma'], 2) WITH ORDINALITY AS j
                        JOIN fx AS f ON f.id = j.id ORDER BY j.ordinality$$,
  ARRAY['mb_p3', 'ma_p4'],
  'the next call locks the next two, whatever the order the queues are named in');

-- Priority ceiling ----------------------------------------------------------------

INSERT INTO fx SELECT 'ceil_p' || p, id FROM unnest(ARRAY[0, 10, 11, 50, 32767]) AS p,
  LATERAL conveyor.enqueue('tap.lock.Ceiling', queue => 'tap_lock_ceiling', priority => p);

SELECT is((SELECT count(*) FROM conveyor.lock_jobs(ARRAY['tap_lock_ceiling'], 10, -1)), 0::bigint,
  'max_priority => -1 locks nothing');
SELECT results_eq(
  $$SELECT f.name FROM conveyor.lock_jobs(ARRAY['tap_lock_ceiling'], 10, 10) WITH ORDINALITY AS j JOIN fx AS f ON f.id = j.id ORDER BY j.ordinality$$,
  ARRAY['ceil_p0', 'ceil_p10'],
  'max_priority => 10 locks priorities 0 and 10 (the ceiling is inclusive), not 11');
SELECT results_eq(
  $$SELECT f.name FROM conveyor.lock_jobs(ARRAY['tap_lock_ceiling'], 10, 100000) WITH ORDINALITY AS j JOIN fx AS f ON f.id = j.id ORDER BY j.ordinality$$,
  ARRAY['ceil_p11', 'ceil_p50', 'ceil_p32767'],
  'a max_priority above 32767 takes any priority');

INSERT INTO fx SELECT 'ceil_null_p32767', id FROM conveyor.enqueue('tap.lock.Ceiling', queue => 'tap_lock_ceiling_null', priority => 32767);
SELECT results_eq(
  $$SELECT f.name FROM conveyor.lock_jobs(ARRAY['tap_lock_ceiling_null'], 10, NULL) WITH ORDINALITY AS j JOIN fx AS f ON f.id = j.id ORDER BY j.ordinality$$,
  ARRAY['ceil_null_p32767'],
  'max_priority => NULL takes any priority, 32767 included');

-- Future, finished and expired jobs -------------------------------------------------

INSERT INTO fx SELECT 'future_1s', id FROM conveyor.enqueue('tap.lock.Future', queue => 'tap_lock_future', priority => 0, run_at => now() + interval '1 second');
INSERT INTO fx SELECT 'future_now', id FROM conveyor.enqueue('tap.lock.Future', queue => 'tap_lock_future', priority => 1, run_at => now());

SELECT results_eq(
  $$SELECT f.name FROM conveyor.lock_jobs(ARRAY['tap_lock_future'], 10) WITH ORDINALITY AS j JOIN fx AS f ON f.id = j.id ORDER BY j.ordinality$$,
  ARRAY['future_now'],
  'a job due now is locked; a more urgent job due one second later is not');

-- Many scheduled jobs at every more urgent priority must not hide a ready job.
SELECT lives_ok(
  $$SELECT conveyor.enqueue_many(
      (SELECT jsonb_agg(jsonb_build_object('job_class', 'tap.lock.Scheduled', 'queue', 'tap_lock_behind',
                                           'priority', p, 'run_at', now() + make_interval(mins => m)))
         FROM generate_series(0, 99) AS p, generate_series(1, 20) AS m))$$,
  'fixture: 2,000 scheduled jobs at priorities 0 to 99');
INSERT INTO fx SELECT 'behind_ready', id FROM conveyor.enqueue('tap.lock.Behind', queue => 'tap_lock_behind', priority => 100, run_at => now() - interval '1 day');
INSERT INTO fx SELECT 'behind_ready_later', id FROM conveyor.enqueue('tap.lock.Behind', queue => 'tap_lock_behind', priority => 100, run_at => now());

SELECT results_eq(
  $$SELECT f.name FROM conveyor.lock_jobs(ARRAY['tap_lock_behind'], 1) WITH ORDINALITY AS j JOIN fx AS f ON f.id = j.id ORDER BY j.ordinality$$,
  ARRAY['behind_ready'],
  'a ready job behind 2,000 scheduled jobs of higher urgency is still found');

SELECT results_eq(
  $$SELECT f.name FROM conveyor.lock_jobs(ARRAY['tap_lock_other_queue', 'tap_lock_behind'], 5) WITH ORDINALITY AS j JOIN fx AS f ON f.id = j.id ORDER BY j.ordinality$$,
  ARRAY['behind_ready_later'],
  'with several queues, the scheduled jobs are stepped over too and none of them is locked');

INSERT INTO fx SELECT 'resolved_finished', id FROM conveyor.enqueue('tap.lock.Resolved', queue => 'tap_lock_resolved', priority => 0);
INSERT INTO fx SELECT 'resolved_expired', id FROM conveyor.enqueue('tap.lock.Resolved', queue => 'tap_lock_resolved', priority => 0);
INSERT INTO fx SELECT 'resolved_ready', id FROM conveyor.enqueue('tap.lock.Resolved', queue => 'tap_lock_resolved', priority => 1);
UPDATE conveyor.jobs SET finished_at = now() WHERE id = (SELECT id FROM fx WHERE name = 'resolved_finished');
UPDATE conveyor.jobs SET expired_at = now() WHERE id = (SELECT id FROM fx WHERE name = 'resolved_expired');

SELECT results_eq(
  $$SELECT f.name FROM conveyor.lock_jobs(ARRAY['tap_lock_resolved'], 10) WITH ORDINALITY AS j JOIN fx AS f ON f.id = j.id ORDER BY j.ordinality$$,
  ARRAY['resolved_ready'],
  'finished and expired jobs are never locked, however urgent');
SELECT is((SELECT count(*) FROM pg_catalog.pg_locks
            WHERE locktype = 'advisory' AND objsubid = 2 AND pid = pg_catalog.pg_backend_pid()
              AND objid::bigint IN (SELECT id FROM fx WHERE name IN ('resolved_finished', 'resolved_expired'))),
  0::bigint, 'no lock is taken on finished or expired jobs');

-- Jobs this session holds through lock_jobs_by_id ----------------------------------

INSERT INTO fx SELECT 'held_' || g, id FROM generate_series(1, 2) AS g,
  LATERAL conveyor.enqueue('tap.lock.Held', queue => 'tap_lock_held', priority => g);
SELECT is((SELECT count(*) FROM conveyor.lock_jobs_by_id(ARRAY(SELECT id FROM fx WHERE name = 'held_1'), queues => (SELECT array_agg(DISTINCT queue) FROM conveyor.jobs))), 1::bigint,
  'fixture: held_1 locked by id');
SELECT results_eq(
  $$SELECT f.name FROM conveyor.lock_jobs(ARRAY['tap_lock_held'], 10) WITH ORDINALITY AS j JOIN fx AS f ON f.id = j.id ORDER BY j.ordinality$$,
  ARRAY['held_2'],
  'a job held through lock_jobs_by_id is not returned by lock_jobs');
SELECT is((SELECT count(*) FROM pg_catalog.pg_locks
            WHERE locktype = 'advisory' AND objsubid = 2 AND pid = pg_catalog.pg_backend_pid()
              AND objid::bigint = (SELECT id FROM fx WHERE name = 'held_1')),
  1::bigint, 'a held job stays locked once (no second, re-entrant hold)');

-- lock_jobs changes no row ------------------------------------------------------------

SELECT is((SELECT count(*) FROM conveyor.jobs
            WHERE id IN (SELECT id FROM fx) AND (finished_at IS NOT NULL OR expired_at IS NOT NULL)),
  2::bigint, 'locking resolves nothing: only the two fixture rows are resolved');

-- Cost: the walk reads index entries for the jobs it steps over, one batch per
-- priority level of scheduled jobs, never the whole backlog. Counted with the
-- transaction's own statistics: index tuples read from jobs_ready_idx plus any
-- sequential-scan tuples of conveyor.jobs. The queues are named for this
-- transaction, so dead index entries left by earlier rolled-back runs in a
-- reused database are not in the range walked. Plans are kept custom: the
-- fixture rows are uncommitted and never analyzed, so a generic plan cached
-- from earlier calls in this session rests on statistics that call the table
-- empty and may read any index in full; that says nothing about the walk.
SET LOCAL plan_cache_mode = force_custom_plan;
CREATE FUNCTION pg_temp.tuples_read() RETURNS bigint LANGUAGE sql AS $$
  SELECT pg_catalog.pg_stat_get_xact_tuples_returned('conveyor.jobs_ready_idx'::regclass)
       + pg_catalog.pg_stat_get_xact_tuples_returned('conveyor.jobs'::regclass)
$$;
SELECT 'tap_lock_cost_' || txid_current() AS cost_q \gset

SELECT lives_ok(
  format($$SELECT conveyor.enqueue_many(
             (SELECT jsonb_agg(jsonb_build_object('job_class', 'tap.lock.Cost', 'queue', %L, 'args', jsonb_build_array(g)))
                FROM generate_series(1, 5000) AS g))$$, :'cost_q' || '_ready'),
  'fixture: 5,000 ready jobs in one queue');
SELECT lives_ok(
  format($$INSERT INTO conveyor.jobs (job_class, queue, finished_at)
           SELECT 'tap.lock.Cost', %L, now() FROM generate_series(1, 5000)$$, :'cost_q' || '_resolved'),
  'fixture: 5,000 finished jobs in another');
INSERT INTO fx SELECT 'cost_resolved_ready', id FROM conveyor.enqueue('tap.lock.Cost', queue => :'cost_q' || '_resolved');
SELECT lives_ok(
  format($$SELECT conveyor.enqueue_many(
             (SELECT jsonb_agg(jsonb_build_object('job_class', 'tap.lock.Cost', 'queue', %L,
                                                  'priority', p, 'run_at', now() + make_interval(mins => m)))
                FROM generate_series(0, 99) AS p, generate_series(1, 50) AS m))$$, :'cost_q' || '_scheduled'),
  'fixture: 5,000 scheduled jobs at 100 priority levels in a third');
INSERT INTO fx SELECT 'cost_scheduled_ready', id FROM conveyor.enqueue('tap.lock.Cost', queue => :'cost_q' || '_scheduled', priority => 100);

SELECT pg_temp.tuples_read() AS before_ready \gset
SELECT is((SELECT count(*) FROM conveyor.lock_jobs(ARRAY[:'cost_q' || '_ready'], 1)), 1::bigint,
  'fixture: one job locked out of a backlog of 5,000');
SELECT cmp_ok(pg_temp.tuples_read() - :before_ready, '<', 100::bigint,
  'locking one job of a 5,000-job ready backlog reads fewer than 100 tuples');

SELECT pg_temp.tuples_read() AS before_resolved \gset
SELECT is((SELECT id FROM conveyor.lock_jobs(ARRAY[:'cost_q' || '_resolved'], 1)),
  (SELECT id FROM fx WHERE name = 'cost_resolved_ready'), 'fixture: the one ready job among 5,000 finished ones locked');
SELECT cmp_ok(pg_temp.tuples_read() - :before_resolved, '<', 100::bigint,
  'with 5,000 finished jobs in the queue, locking the ready one reads fewer than 100 tuples');

SELECT pg_temp.tuples_read() AS before_scheduled \gset
SELECT is((SELECT id FROM conveyor.lock_jobs(ARRAY[:'cost_q' || '_scheduled'], 1)),
  (SELECT id FROM fx WHERE name = 'cost_scheduled_ready'), 'fixture: the ready job behind 5,000 scheduled ones locked');
SELECT cmp_ok(pg_temp.tuples_read() - :before_scheduled, '<', 2500::bigint,
  'behind 5,000 scheduled jobs at 100 priorities the walk reads fewer than half of them (it jumps per priority)');

RESET plan_cache_mode;

-- held: the caller's own count of the jobs it holds, instead of pg_locks --------------

INSERT INTO fx SELECT 'hint_' || g, id FROM generate_series(1, 3) AS g,
  LATERAL conveyor.enqueue('tap.lock.Hint', queue => 'tap_lock_hint', priority => g);
SELECT is((SELECT count(*) FROM conveyor.lock_jobs(ARRAY['tap_lock_hint'], 1)), 1::bigint,
  'fixture: hint_1 locked');
SELECT results_eq(
  $$SELECT f.name FROM conveyor.lock_jobs(ARRAY['tap_lock_hint'], 1, held => ARRAY(SELECT id FROM fx WHERE name IN ('hint_1', 'hint_2'))) AS j
      JOIN fx AS f ON f.id = j.id$$,
  ARRAY['hint_3'],
  'lock_jobs skips the jobs named in held (hint_2 is not even locked: the caller says it holds it)');
SELECT is((SELECT count(*) FROM pg_catalog.pg_locks
            WHERE locktype = 'advisory' AND pid = pg_catalog.pg_backend_pid() AND objsubid = 2
              AND objid::bigint = (SELECT id FROM fx WHERE name = 'hint_2')),
  0::bigint, 'a job named in held is not locked');
-- held replaces the pg_locks read, so it is trusted: a held job left out is
-- locked a second time (hence "it must be complete" in the documentation).
-- hint_3 is the exception: a call given held locked it earlier in this
-- transaction, and conveyor remembers that itself.
SELECT results_eq(
  $$SELECT f.name FROM conveyor.lock_jobs(ARRAY['tap_lock_hint'], 3, held => ARRAY[]::bigint[]) AS j
      JOIN fx AS f ON f.id = j.id$$,
  ARRAY['hint_1', 'hint_2'],
  'held is trusted instead of pg_locks: with an empty held the session''s own jobs are locked again, '
  'except those a call given held locked in this transaction');
SELECT is(conveyor.locked_in_transaction() @> ARRAY(SELECT id FROM fx WHERE name LIKE 'hint_%'), true,
  'the jobs locked by calls given held are remembered for the rest of the transaction');

-- held may come in any order, with repeats and NULLs (lock_jobs sorts it for
-- a binary search per walked row).
INSERT INTO fx SELECT 'unsorted_' || g, id FROM generate_series(1, 4) AS g,
  LATERAL conveyor.enqueue('tap.lock.Unsorted', queue => 'tap_lock_unsorted', priority => g);
SELECT results_eq(
  $$SELECT f.name FROM conveyor.lock_jobs(ARRAY['tap_lock_unsorted'], 10,
        held => ARRAY[(SELECT id FROM fx WHERE name = 'unsorted_3'), NULL, (SELECT id FROM fx WHERE name = 'unsorted_1'),
                      (SELECT id FROM fx WHERE name = 'unsorted_3'), -7]) AS j
      JOIN fx AS f ON f.id = j.id$$,
  ARRAY['unsorted_2', 'unsorted_4'],
  'an unsorted held list with repeats, NULLs and unknown ids skips exactly the jobs it names');

-- What a pipeline sends: announced jobs locked by id, then polls at two
-- ceilings, each with the held list the caller had before any of them ran.
INSERT INTO fx SELECT 'pipe_' || g, id FROM generate_series(1, 4) AS g,
  LATERAL conveyor.enqueue('tap.lock.Pipe', queue => 'tap_lock_pipe', priority => g * 10);
SELECT results_eq(
  $$SELECT f.name FROM conveyor.lock_jobs_by_id(ARRAY(SELECT id FROM fx WHERE name = 'pipe_3'), ARRAY['tap_lock_pipe'], ARRAY[]::bigint[]) AS j
      JOIN fx AS f ON f.id = j.id$$,
  ARRAY['pipe_3'], 'pipeline: the announced job is locked by id');
SELECT results_eq(
  $$SELECT f.name FROM conveyor.lock_jobs(ARRAY['tap_lock_pipe'], 10, 20, ARRAY[]::bigint[]) AS j
      JOIN fx AS f ON f.id = j.id$$,
  ARRAY['pipe_1', 'pipe_2'], 'pipeline: the reserved poll locks the urgent jobs');
SELECT results_eq(
  $$SELECT f.name FROM conveyor.lock_jobs(ARRAY['tap_lock_pipe'], 10, NULL, ARRAY[]::bigint[]) AS j
      JOIN fx AS f ON f.id = j.id$$,
  ARRAY['pipe_4'],
  'pipeline: the widest poll skips every job the earlier calls of the transaction locked');
SELECT results_eq(
  $$SELECT f.name FROM conveyor.lock_jobs_by_id(ARRAY(SELECT id FROM fx WHERE name LIKE 'pipe_%' ORDER BY id), ARRAY['tap_lock_pipe'], ARRAY[]::bigint[]) AS j
      JOIN fx AS f ON f.id = j.id$$,
  ARRAY[]::text[], 'pipeline: lock_jobs_by_id skips them too');

-- Bad input ----------------------------------------------------------------------------

SELECT throws_ok($$SELECT * FROM conveyor.lock_jobs(NULL, 1)$$, '22004',
  'conveyor.lock_jobs: queues and max_jobs must not be NULL', 'NULL queues raises 22004');
SELECT throws_ok($$SELECT * FROM conveyor.lock_jobs(ARRAY['default'], NULL)$$, '22004',
  'conveyor.lock_jobs: queues and max_jobs must not be NULL', 'NULL max_jobs raises 22004');
SELECT throws_ok($$SELECT * FROM conveyor.lock_jobs(ARRAY[]::text[], 1)$$, '22023',
  'conveyor.lock_jobs: queues must name at least one queue', 'an empty queues array raises 22023');
SELECT throws_ok($$SELECT * FROM conveyor.lock_jobs(ARRAY['default'], -1)$$, '22023',
  'conveyor.lock_jobs: max_jobs must not be negative, not -1', 'a negative max_jobs raises 22023');

SELECT * FROM finish();
ROLLBACK;
