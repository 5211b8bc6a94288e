-- job_stats(label) and queue_stats(label): the stats of the jobs carrying a label.
BEGIN;
SELECT plan(7);

SELECT conveyor.enqueue('tap.sl.A', queue => 'tap_sl', labels => ARRAY['tap-red', 'tap-x']);
SELECT conveyor.enqueue('tap.sl.A', queue => 'tap_sl', labels => ARRAY['tap-red']);
SELECT conveyor.enqueue('tap.sl.B', queue => 'tap_sl2', labels => ARRAY['tap-red'], run_at => now() + interval '1 hour');
SELECT conveyor.enqueue('tap.sl.A', queue => 'tap_sl');
SELECT conveyor.enqueue('tap.sl.C', queue => 'tap_sl', labels => ARRAY['tap-blue']);

SELECT results_eq($$SELECT job_class, count FROM conveyor.job_stats(label => 'tap-red')$$,
  $$VALUES ('tap.sl.A', 2::bigint), ('tap.sl.B', 1::bigint)$$,
  'job_stats(label) counts only the jobs carrying the label, per class');
SELECT results_eq($$SELECT job_class, count FROM conveyor.job_stats('tap-x')$$,
  $$VALUES ('tap.sl.A', 1::bigint)$$, 'a label among several is matched');
SELECT is((SELECT count(*) FROM conveyor.job_stats(NULL)), 0::bigint, 'a NULL label matches no job');
SELECT results_eq($$SELECT queue, ready, scheduled FROM conveyor.queue_stats(label => 'tap-red')$$,
  $$VALUES ('tap_sl', 2::bigint, 0::bigint), ('tap_sl2', 0::bigint, 1::bigint)$$,
  'queue_stats(label) counts only the jobs carrying the label, per queue');
SELECT is((SELECT sum(count) FROM conveyor.job_stats() WHERE job_class LIKE 'tap.sl.%'), 5::numeric,
  'job_stats() still counts every job');
SELECT ok(has_function_privilege('conveyor_worker', 'conveyor.job_stats(text)', 'EXECUTE')
          AND has_function_privilege('conveyor_admin', 'conveyor.queue_stats(text)', 'EXECUTE'),
  'workers and conveyor_admin may read them, as job_stats() and queue_stats()');
SELECT ok(NOT has_function_privilege('conveyor_enqueuer', 'conveyor.job_stats(text)', 'EXECUTE'),
  'enqueuers may not');

SELECT * FROM finish();
ROLLBACK;
