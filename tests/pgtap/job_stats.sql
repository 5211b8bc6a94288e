-- conveyor.job_stats(): Que's per-class statistics over unresolved jobs.
-- Only the fixture's classes are compared, so other jobs in the database do
-- not matter; count_working comes from a lock this session takes.
BEGIN;
SELECT plan(8);

SELECT has_function('conveyor', 'job_stats', ARRAY[]::text[], 'conveyor.job_stats() exists');

CREATE TEMP TABLE fx (name text PRIMARY KEY, id bigint NOT NULL);
INSERT INTO fx SELECT 'a_working', id FROM conveyor.enqueue('tap.stats.A', queue => 'tap_stats', run_at => now() - interval '1 hour');
INSERT INTO fx SELECT 'a_errored', id FROM conveyor.enqueue('tap.stats.A', queue => 'tap_stats', run_at => now() - interval '2 hours');
INSERT INTO fx SELECT 'a_scheduled', id FROM conveyor.enqueue('tap.stats.A', queue => 'tap_stats', run_at => now() + interval '1 hour');
INSERT INTO fx SELECT 'a_finished', id FROM conveyor.enqueue('tap.stats.A', queue => 'tap_stats', run_at => now() - interval '10 hours');
INSERT INTO fx SELECT 'a_expired', id FROM conveyor.enqueue('tap.stats.A', queue => 'tap_stats', run_at => now() - interval '10 hours');
INSERT INTO fx SELECT 'b_ready', id FROM conveyor.enqueue('tap.stats.B', queue => 'tap_stats_b', run_at => now() - interval '30 minutes');
INSERT INTO fx SELECT 'c_finished', id FROM conveyor.enqueue('tap.stats.C', queue => 'tap_stats');
INSERT INTO fx SELECT 'd_' || g, id FROM generate_series(1, 2) AS g, LATERAL conveyor.enqueue('tap.stats.D', jsonb_build_array(g), queue => 'tap_stats');

UPDATE conveyor.jobs SET error_count = 2 WHERE id = (SELECT id FROM fx WHERE name = 'a_errored');
UPDATE conveyor.jobs SET error_count = 5 WHERE id = (SELECT id FROM fx WHERE name = 'a_scheduled');
UPDATE conveyor.jobs SET error_count = 9, expired_at = now() WHERE id = (SELECT id FROM fx WHERE name = 'a_expired');
UPDATE conveyor.jobs SET error_count = 9 WHERE id = (SELECT id FROM fx WHERE name = 'a_finished');
UPDATE conveyor.jobs SET finished_at = now() WHERE id = (SELECT id FROM fx WHERE name = 'c_finished');

SELECT is((SELECT count(*) FROM conveyor.lock_jobs_by_id(ARRAY(SELECT id FROM fx WHERE name IN ('a_working', 'a_finished')), queues => (SELECT array_agg(DISTINCT queue) FROM conveyor.jobs))),
  2::bigint, 'fixture: a_working and a_finished locked by this session');
SELECT is(conveyor.finish_job((SELECT id FROM fx WHERE name = 'a_finished')), true,
  'fixture: a_finished finished while still locked until the transaction ends');

SELECT results_eq(
  $$SELECT job_class, count, count_working, count_errored, highest_error_count, oldest_run_at
      FROM conveyor.job_stats() WHERE job_class LIKE 'tap.stats.%'$$,
  $$VALUES ('tap.stats.A'::text, 3::bigint, 1::bigint, 2::bigint, 5, now() - interval '2 hours'),
           ('tap.stats.D', 2, 0, 0, 0, now()),
           ('tap.stats.B', 1, 0, 0, 0, now() - interval '30 minutes')$$,
  'job_stats: per class count, count_working, count_errored, highest_error_count, oldest_run_at, most numerous first');

SELECT is((SELECT count(*) FROM conveyor.job_stats() WHERE job_class = 'tap.stats.C'), 0::bigint,
  'a class with only resolved jobs has no row');

-- count_working follows the locks.
SELECT is(ARRAY(SELECT conveyor.unlock_jobs(ARRAY(SELECT id FROM fx WHERE name = 'a_working'))),
  ARRAY(SELECT id FROM fx WHERE name = 'a_working'), 'fixture: a_working released');
SELECT id AS d_1 FROM fx WHERE name = 'd_1' \gset
SELECT pg_catalog.pg_advisory_lock(1129270870, :d_1::integer) IS NOT NULL AS taken \gset
SELECT results_eq(
  $$SELECT job_class, count_working FROM conveyor.job_stats() WHERE job_class IN ('tap.stats.A', 'tap.stats.D')$$,
  $$VALUES ('tap.stats.A'::text, 1::bigint), ('tap.stats.D', 1)$$,
  'a lock taken by hand on conveyor''s key counts as working; a released job stays locked until the transaction ends');

SELECT is((SELECT count(*) FROM conveyor.job_stats() WHERE job_class LIKE 'tap.stats.%'
            AND (count_working > count OR count_errored > count)),
  0::bigint, 'count_working and count_errored never exceed count');

SELECT * FROM finish();
ROLLBACK;
