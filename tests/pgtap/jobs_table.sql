-- conveyor.jobs: the named check constraints guard rows written without the
-- functions (the owner's maintenance statements); the error names the rule.
BEGIN;
SELECT plan(21);

SELECT throws_ok($$INSERT INTO conveyor.jobs (job_class) VALUES ('')$$, '23514',
  'new row for relation "jobs" violates check constraint "jobs_job_class_length"',
  'an empty job_class violates jobs_job_class_length');
SELECT throws_ok($$INSERT INTO conveyor.jobs (job_class) VALUES (repeat('j', 501))$$, '23514',
  'new row for relation "jobs" violates check constraint "jobs_job_class_length"',
  'a 501-character job_class violates jobs_job_class_length');
SELECT throws_ok($$INSERT INTO conveyor.jobs (job_class) VALUES (NULL)$$, '23502', NULL,
  'a NULL job_class violates NOT NULL');
SELECT throws_ok($$INSERT INTO conveyor.jobs (job_class, queue) VALUES ('tap.table.Direct', repeat('q', 101))$$, '23514',
  'new row for relation "jobs" violates check constraint "jobs_queue_length"',
  'a 101-character queue violates jobs_queue_length');
SELECT throws_ok($$INSERT INTO conveyor.jobs (job_class, args) VALUES ('tap.table.Direct', '{}')$$, '23514',
  'new row for relation "jobs" violates check constraint "jobs_args_is_array"',
  'args that is not an array violates jobs_args_is_array');
SELECT throws_ok($$INSERT INTO conveyor.jobs (job_class, data) VALUES ('tap.table.Direct', '[]')$$, '23514',
  'new row for relation "jobs" violates check constraint "jobs_data_is_object"',
  'data that is not an object violates jobs_data_is_object');
SELECT throws_ok($$INSERT INTO conveyor.jobs (job_class, priority) VALUES ('tap.table.Direct', -1)$$, '23514',
  'new row for relation "jobs" violates check constraint "jobs_priority_in_range"',
  'priority -1 violates jobs_priority_in_range');
SELECT throws_ok($$INSERT INTO conveyor.jobs (job_class, error_count) VALUES ('tap.table.Direct', -1)$$, '23514',
  'new row for relation "jobs" violates check constraint "jobs_error_count_not_negative"',
  'a negative error_count violates jobs_error_count_not_negative');
SELECT throws_ok($$INSERT INTO conveyor.jobs (job_class, maximum_retry_count) VALUES ('tap.table.Direct', -1)$$, '23514',
  'new row for relation "jobs" violates check constraint "jobs_maximum_retry_count_not_negative"',
  'a negative maximum_retry_count violates jobs_maximum_retry_count_not_negative');
SELECT throws_ok($$INSERT INTO conveyor.jobs (job_class, last_error_message) VALUES ('tap.table.Direct', repeat('m', 1001))$$, '23514',
  'new row for relation "jobs" violates check constraint "jobs_last_error_message_length"',
  'a 1,001-character last_error_message violates jobs_last_error_message_length');
SELECT throws_ok($$INSERT INTO conveyor.jobs (job_class, last_error_backtrace) VALUES ('tap.table.Direct', repeat('b', 10001))$$, '23514',
  'new row for relation "jobs" violates check constraint "jobs_last_error_backtrace_length"',
  'a 10,001-character last_error_backtrace violates jobs_last_error_backtrace_length');
SELECT throws_ok($$INSERT INTO conveyor.jobs (job_class, finished_at, expired_at) VALUES ('tap.table.Direct', now(), now())$$, '23514',
  'new row for relation "jobs" violates check constraint "jobs_not_both_finished_and_expired"',
  'a row both finished and expired violates jobs_not_both_finished_and_expired');
SELECT throws_ok($$INSERT INTO conveyor.jobs (id, job_class) VALUES (1, 'tap.table.Direct')$$, '428C9', NULL,
  'id is GENERATED ALWAYS: an explicit id is rejected');

SELECT lives_ok(
  $$INSERT INTO conveyor.jobs (job_class, queue, last_error_message, last_error_backtrace)
    VALUES (repeat('j', 500), repeat('q', 100), repeat('m', 1000), repeat('b', 10000))$$,
  'values exactly at every length limit are accepted');

-- One home for the limits (conveyor.job_limit) and for the defaults (the
-- column defaults): the copies that remain for speed or for documentation
-- must agree with them.

SELECT is(ARRAY[conveyor.job_limit('job_class'), conveyor.job_limit('queue'), conveyor.job_limit('priority'),
                conveyor.job_limit('last_error_message'), conveyor.job_limit('last_error_backtrace')],
  ARRAY[500, 100, 32767, 1000, 10000], 'job_limit gives the documented limits');
SELECT throws_ok($$SELECT conveyor.job_limit('nope')$$, '22P02', NULL, 'job_limit of an unknown name raises 22P02');
CREATE FUNCTION pg_temp.plan_of(query text) RETURNS text LANGUAGE plpgsql AS $f$
DECLARE v_line text; v_plan text := '';
BEGIN
  FOR v_line IN EXECUTE 'EXPLAIN (VERBOSE, COSTS OFF) ' || query LOOP v_plan := v_plan || v_line || E'\n'; END LOOP;
  RETURN v_plan;
END
$f$;
SELECT matches(pg_temp.plan_of($q$SELECT conveyor.job_limit('queue')$q$), 'Output: 100\n',
  'the planner folds job_limit(''queue'') to the constant 100');
SELECT results_eq(
  $$SELECT conname::text COLLATE "default", pg_catalog.pg_get_constraintdef(oid) COLLATE "default" FROM pg_catalog.pg_constraint
     WHERE conrelid = 'conveyor.jobs'::regclass AND conname IN ('jobs_job_class_length', 'jobs_queue_length',
           'jobs_last_error_message_length', 'jobs_last_error_backtrace_length') ORDER BY 1$$,
  format($$VALUES ('jobs_job_class_length', 'CHECK (((char_length(job_class) >= 1) AND (char_length(job_class) <= %s)))'),
                  ('jobs_last_error_backtrace_length', 'CHECK ((char_length(last_error_backtrace) <= %s))'),
                  ('jobs_last_error_message_length', 'CHECK ((char_length(last_error_message) <= %s))'),
                  ('jobs_queue_length', 'CHECK (((char_length(queue) >= 1) AND (char_length(queue) <= %s)))')$$,
         conveyor.job_limit('job_class'), conveyor.job_limit('last_error_backtrace'),
         conveyor.job_limit('last_error_message'), conveyor.job_limit('queue')),
  'the length constraints of conveyor.jobs repeat job_limit''s numbers');
SELECT is((SELECT max(v) FROM (VALUES (32767::smallint)) AS t(v))::integer, conveyor.job_limit('priority'),
  'job_limit(''priority'') is the largest smallint, the priority column''s type');

SELECT results_eq(
  $$SELECT queue, priority::integer, maximum_retry_count FROM conveyor.enqueue('tap.table.Defaults')$$,
  $$WITH d AS (INSERT INTO conveyor.jobs (job_class) VALUES ('tap.table.Defaults') RETURNING queue, priority, maximum_retry_count)
    SELECT queue, priority::integer, maximum_retry_count FROM d$$,
  'enqueue''s parameter defaults are the column defaults (queue, priority, maximum_retry_count)');
SELECT conveyor.enqueue_many('[{"job_class": "tap.table.Defaults"}]') AS many_id \gset
SELECT results_eq(
  format($$SELECT queue, priority::integer, maximum_retry_count FROM conveyor.jobs WHERE id = %s$$, :many_id),
  $$WITH d AS (INSERT INTO conveyor.jobs (job_class) VALUES ('tap.table.Defaults') RETURNING queue, priority, maximum_retry_count)
    SELECT queue, priority::integer, maximum_retry_count FROM d$$,
  'enqueue_many gives an element without queue, priority or maximum_retry_count the column defaults');

SELECT * FROM finish();
ROLLBACK;
