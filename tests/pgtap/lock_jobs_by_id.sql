-- conveyor.lock_jobs_by_id(ids bigint[], queues text[], held bigint[]): lock announced jobs.
BEGIN;
SELECT plan(17);

SELECT has_function('conveyor', 'lock_jobs_by_id', ARRAY['bigint[]', 'text[]', 'bigint[]'], 'conveyor.lock_jobs_by_id(bigint[], text[], bigint[]) exists');
SELECT function_returns('conveyor', 'lock_jobs_by_id', ARRAY['bigint[]', 'text[]', 'bigint[]'], 'setof conveyor.jobs',
  'conveyor.lock_jobs_by_id returns SETOF conveyor.jobs');

CREATE TEMP TABLE fx (name text PRIMARY KEY, id bigint NOT NULL);
INSERT INTO fx SELECT 'p50', id FROM conveyor.enqueue('tap.byid.Job', queue => 'tap_byid_a', priority => 50);
INSERT INTO fx SELECT 'p10', id FROM conveyor.enqueue('tap.byid.Job', queue => 'tap_byid_b', priority => 10);
INSERT INTO fx SELECT 'p10_older', id FROM conveyor.enqueue('tap.byid.Job', queue => 'tap_byid_c', priority => 10, run_at => now() - interval '1 hour');
INSERT INTO fx SELECT 'future', id FROM conveyor.enqueue('tap.byid.Job', queue => 'tap_byid_a', priority => 0, run_at => now() + interval '1 minute');
INSERT INTO fx SELECT 'finished', id FROM conveyor.enqueue('tap.byid.Job', queue => 'tap_byid_a', priority => 0);
INSERT INTO fx SELECT 'expired', id FROM conveyor.enqueue('tap.byid.Job', queue => 'tap_byid_a', priority => 0);
UPDATE conveyor.jobs SET finished_at = now() WHERE id = (SELECT id FROM fx WHERE name = 'finished');
UPDATE conveyor.jobs SET expired_at = now() WHERE id = (SELECT id FROM fx WHERE name = 'expired');
INSERT INTO fx SELECT 'missing', max(id) + 1000000 FROM fx;

CREATE TEMP TABLE t_locked AS
  SELECT j.ordinality AS n, j.*
    FROM conveyor.lock_jobs_by_id(ARRAY(SELECT id FROM fx ORDER BY name DESC), queues => (SELECT array_agg(DISTINCT queue) FROM conveyor.jobs)) WITH ORDINALITY AS j;

SELECT results_eq(
  $$SELECT f.name FROM t_locked AS t JOIN fx AS f ON f.id = t.id ORDER BY t.n$$,
  ARRAY['p10_older', 'p10', 'p50'],
  'the ready jobs are locked and returned most urgent first, whatever the queue and the input order');

SELECT results_eq(
  $$SELECT t.id, t.priority, t.run_at, t.job_class, t.queue, t.args, t.data, t.error_count,
           t.maximum_retry_count, t.last_error_message, t.last_error_backtrace, t.finished_at,
           t.expired_at, t.created_at, t.unique_key, t.concurrency_key, t.labels, t.batch_id
      FROM t_locked AS t ORDER BY t.id$$,
  $$SELECT j.* FROM conveyor.jobs AS j JOIN fx AS f ON f.id = j.id
     WHERE f.name IN ('p50', 'p10', 'p10_older') ORDER BY j.id$$,
  'lock_jobs_by_id returns the full, unchanged rows');

SELECT is(
  ARRAY(SELECT l.objid::bigint FROM pg_catalog.pg_locks AS l
         WHERE l.locktype = 'advisory' AND l.pid = pg_catalog.pg_backend_pid() AND l.granted
           AND l.classid = 1129270870 AND l.objsubid = 2
           AND l.objid::bigint IN (SELECT id FROM fx)
         ORDER BY 1),
  ARRAY(SELECT id FROM fx WHERE name IN ('p50', 'p10', 'p10_older') ORDER BY id),
  'exactly the returned jobs are locked (classid 1129270870, objid = id, objsubid 2)');

SELECT is(
  (SELECT count(*) FROM pg_catalog.pg_locks AS l
    WHERE l.locktype = 'advisory' AND l.pid = pg_catalog.pg_backend_pid()
      AND l.objid::bigint IN (SELECT id FROM fx WHERE name IN ('future', 'finished', 'expired', 'missing'))),
  0::bigint, 'no lock is taken on a future, finished, expired or missing job');

SELECT is((SELECT count(*) FROM conveyor.lock_jobs_by_id(ARRAY(SELECT id FROM fx), queues => (SELECT array_agg(DISTINCT queue) FROM conveyor.jobs))), 0::bigint,
  'jobs this session already holds are not returned again');

SELECT is((SELECT count(*) FROM pg_catalog.pg_locks AS l
            WHERE l.locktype = 'advisory' AND l.pid = pg_catalog.pg_backend_pid() AND l.objsubid = 2
              AND l.objid::bigint = (SELECT id FROM fx WHERE name = 'p50')),
  1::bigint, 'asking again for a held job leaves a single lock');

INSERT INTO fx SELECT 'dup', id FROM conveyor.enqueue('tap.byid.Dup', queue => 'tap_byid_dup');
SELECT is((SELECT count(*) FROM conveyor.lock_jobs_by_id(ARRAY[(SELECT id FROM fx WHERE name = 'dup'),
                                                                (SELECT id FROM fx WHERE name = 'dup')], queues => (SELECT array_agg(DISTINCT queue) FROM conveyor.jobs))),
  1::bigint, 'an id given twice is locked and returned once');

SELECT is((SELECT count(*) FROM conveyor.lock_jobs_by_id(ARRAY[]::bigint[], queues => (SELECT array_agg(DISTINCT queue) FROM conveyor.jobs))), 0::bigint,
  'an empty array locks nothing');

SELECT is((SELECT count(*) FROM conveyor.lock_jobs_by_id(NULL, queues => (SELECT array_agg(DISTINCT queue) FROM conveyor.jobs))), 0::bigint,
  'a NULL array locks nothing and raises nothing');

INSERT INTO fx SELECT 'now', id FROM conveyor.enqueue('tap.byid.Now', queue => 'tap_byid_now', run_at => now());
SELECT results_eq(
  $$SELECT f.name FROM conveyor.lock_jobs_by_id(ARRAY(SELECT id FROM fx WHERE name = 'now'), queues => (SELECT array_agg(DISTINCT queue) FROM conveyor.jobs)) WITH ORDINALITY AS j JOIN fx AS f ON f.id = j.id ORDER BY j.ordinality$$,
  ARRAY['now'],
  'a job whose run_at is exactly now() is ready and locked');

SELECT is((SELECT count(*) FROM conveyor.jobs WHERE id IN (SELECT id FROM fx)
            AND (finished_at IS NOT NULL OR expired_at IS NOT NULL)), 2::bigint,
  'lock_jobs_by_id resolves nothing: only the two fixture rows are resolved');

INSERT INTO fx SELECT 'other_queue', id FROM conveyor.enqueue('tap.byid.Other', queue => 'tap_byid_other');
SELECT is((SELECT count(*) FROM conveyor.lock_jobs_by_id(ARRAY(SELECT id FROM fx WHERE name = 'other_queue'), queues => ARRAY['tap_byid_a'])),
  0::bigint, 'a job of a queue not listed is not locked (a forged NOTIFY cannot hand it out)');
INSERT INTO fx SELECT 'default_queue', id FROM conveyor.enqueue('tap.byid.Default');
SELECT results_eq(
  $$SELECT f.name FROM conveyor.lock_jobs_by_id(ARRAY(SELECT id FROM fx WHERE name IN ('default_queue', 'other_queue'))) AS j JOIN fx AS f ON f.id = j.id$$,
  ARRAY['default_queue'],
  'without queues only the default queue is served');

INSERT INTO fx SELECT 'hint_' || g, id FROM generate_series(1, 2) AS g,
  LATERAL conveyor.enqueue('tap.byid.Held', queue => 'tap_byid_held', priority => g);
SELECT results_eq(
  $$SELECT f.name FROM conveyor.lock_jobs_by_id(ARRAY(SELECT id FROM fx WHERE name LIKE 'hint\_%'), ARRAY['tap_byid_held'],
                                                held => ARRAY(SELECT id FROM fx WHERE name = 'hint_1')) AS j
      JOIN fx AS f ON f.id = j.id$$,
  ARRAY['hint_2'],
  'lock_jobs_by_id skips the jobs named in held');
SELECT is((SELECT count(*) FROM pg_catalog.pg_locks
            WHERE locktype = 'advisory' AND pid = pg_catalog.pg_backend_pid() AND objsubid = 2
              AND objid::bigint = (SELECT id FROM fx WHERE name = 'hint_1')),
  0::bigint, 'and does not lock them');

SELECT * FROM finish();
ROLLBACK;
