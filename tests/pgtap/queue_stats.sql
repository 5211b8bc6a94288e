-- conveyor.queue_stats(): per-queue counts. Only the fixture's queues are
-- compared; "working" comes from locks this session takes.
BEGIN;
SELECT plan(6);

SELECT has_function('conveyor', 'queue_stats', ARRAY[]::text[], 'conveyor.queue_stats() exists');

CREATE TEMP TABLE fx (name text PRIMARY KEY, id bigint NOT NULL);
INSERT INTO fx SELECT 'a_ready_old', id FROM conveyor.enqueue('tap.qstats.Job', queue => 'tap_qstats_a', run_at => now() - interval '10 minutes');
INSERT INTO fx SELECT 'a_ready_errored', id FROM conveyor.enqueue('tap.qstats.Job', queue => 'tap_qstats_a', run_at => now() - interval '1 minute');
INSERT INTO fx SELECT 'a_scheduled_errored', id FROM conveyor.enqueue('tap.qstats.Job', queue => 'tap_qstats_a', run_at => now() + interval '1 hour');
INSERT INTO fx SELECT 'a_working', id FROM conveyor.enqueue('tap.qstats.Job', queue => 'tap_qstats_a', run_at => now() - interval '1 day');
INSERT INTO fx SELECT 'a_expired', id FROM conveyor.enqueue('tap.qstats.Job', queue => 'tap_qstats_a', run_at => now() - interval '2 days');
INSERT INTO fx SELECT 'a_finished_' || g, id FROM generate_series(1, 2) AS g,
  LATERAL conveyor.enqueue('tap.qstats.Job', jsonb_build_array(g), queue => 'tap_qstats_a', run_at => now() - interval '3 days');
INSERT INTO fx SELECT 'b_finished', id FROM conveyor.enqueue('tap.qstats.Job', queue => 'tap_qstats_b');
INSERT INTO fx SELECT 'c_scheduled_locked', id FROM conveyor.enqueue('tap.qstats.Job', queue => 'tap_qstats_c', run_at => now() + interval '1 day');
INSERT INTO fx SELECT 'c_scheduled', id FROM conveyor.enqueue('tap.qstats.Job', queue => 'tap_qstats_c', run_at => now() + interval '1 day');

UPDATE conveyor.jobs SET error_count = 3 WHERE id IN (SELECT id FROM fx WHERE name IN ('a_ready_errored', 'a_scheduled_errored'));
UPDATE conveyor.jobs SET error_count = 1, expired_at = now() WHERE id = (SELECT id FROM fx WHERE name = 'a_expired');
UPDATE conveyor.jobs SET finished_at = now() WHERE id IN (SELECT id FROM fx WHERE name LIKE '%finished%');

SELECT is((SELECT count(*) FROM conveyor.lock_jobs_by_id(ARRAY(SELECT id FROM fx WHERE name = 'a_working'), queues => (SELECT array_agg(DISTINCT queue) FROM conveyor.jobs))),
  1::bigint, 'fixture: a_working locked by this session');
SELECT id AS c_scheduled_locked FROM fx WHERE name = 'c_scheduled_locked' \gset
SELECT pg_catalog.pg_advisory_lock(1129270870, :c_scheduled_locked::integer) IS NOT NULL AS taken \gset

SELECT results_eq(
  $$SELECT queue, ready, scheduled, working, errored, expired, finished, oldest_ready_age
      FROM conveyor.queue_stats() WHERE queue LIKE 'tap\_qstats\_%'$$,
  $$VALUES ('tap_qstats_a'::text, 2::bigint, 1::bigint, 1::bigint, 2::bigint, 1::bigint, 2::bigint, interval '10 minutes'),
           ('tap_qstats_b', 0, 0, 0, 0, 0, 1, NULL),
           ('tap_qstats_c', 0, 1, 1, 0, 0, 0, NULL)$$,
  'queue_stats: ready, scheduled, working, errored, expired, finished and oldest_ready_age per queue, ordered by queue');

SELECT is((SELECT oldest_ready_age FROM conveyor.queue_stats() WHERE queue = 'tap_qstats_a'), interval '10 minutes',
  'oldest_ready_age ignores the working job, however old');

SELECT is((SELECT count(*) FROM conveyor.queue_stats() WHERE queue = 'tap_qstats_none'), 0::bigint,
  'a queue without jobs has no row');

SELECT is(
  (SELECT ready + scheduled + working + expired + finished FROM conveyor.queue_stats() WHERE queue = 'tap_qstats_a'),
  (SELECT count(*) FROM conveyor.jobs WHERE queue = 'tap_qstats_a'),
  'every job of a queue is in exactly one of ready, scheduled, working, expired, finished');

SELECT * FROM finish();
ROLLBACK;
