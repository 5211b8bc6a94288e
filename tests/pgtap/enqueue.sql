-- conveyor.enqueue(job_class, args, queue, priority, run_at, data, maximum_retry_count, unique_key,
--                  concurrency_key, labels, batch_id); the last three in tests/pgtap/flow_columns.sql
BEGIN;
SELECT plan(64);

SELECT has_function('conveyor', 'enqueue',
  ARRAY['text', 'jsonb', 'text', 'integer', 'timestamp with time zone', 'jsonb', 'integer', 'text',
        'text', 'text[]', 'bigint'],
  'conveyor.enqueue(text, jsonb, text, integer, timestamptz, jsonb, integer, text, text, text[], bigint) exists');

SELECT function_returns('conveyor', 'enqueue',
  ARRAY['text', 'jsonb', 'text', 'integer', 'timestamp with time zone', 'jsonb', 'integer', 'text',
        'text', 'text[]', 'bigint'],
  'conveyor.jobs', 'conveyor.enqueue returns a conveyor.jobs row');

-- Defaults --------------------------------------------------------------------

CREATE TEMP TABLE t_default AS SELECT * FROM conveyor.enqueue('tap.enqueue.Defaults');

SELECT is((SELECT count(*) FROM t_default), 1::bigint, 'enqueue with only job_class returns one row');

SELECT results_eq(
  $$SELECT job_class, args, queue, priority, run_at, data, error_count, maximum_retry_count,
           last_error_message, last_error_backtrace, finished_at, expired_at, created_at
      FROM t_default$$,
  $$VALUES ('tap.enqueue.Defaults'::text, '[]'::jsonb, 'default'::text, 100::smallint, now(),
            '{}'::jsonb, 0, 15, NULL::text, NULL::text, NULL::timestamptz, NULL::timestamptz, now())$$,
  'enqueue defaults: args [], queue default, priority 100, run_at now(), data {}, maximum_retry_count 15');

SELECT results_eq(
  $$SELECT j.* FROM conveyor.jobs AS j JOIN t_default AS t ON t.id = j.id$$,
  $$SELECT * FROM t_default$$,
  'the row enqueue returns is the row it stored');

SELECT cmp_ok((SELECT id FROM t_default), '>', 0::bigint, 'enqueue assigns a positive identity id');

-- Every parameter, positional and named ---------------------------------------

CREATE TEMP TABLE t_positional AS
  SELECT * FROM conveyor.enqueue('tap.enqueue.Positional', '[1, "two", {"three": 3}]', 'tap_enqueue_q', 7,
                                 '2031-01-02 03:04:05+00', '{"tags": ["a"]}', 3);

SELECT results_eq(
  $$SELECT job_class, args, queue, priority, run_at, data, maximum_retry_count FROM t_positional$$,
  $$VALUES ('tap.enqueue.Positional'::text, '[1, "two", {"three": 3}]'::jsonb, 'tap_enqueue_q'::text,
            7::smallint, '2031-01-02 03:04:05+00'::timestamptz, '{"tags": ["a"]}'::jsonb, 3)$$,
  'enqueue stores every positional parameter');

CREATE TEMP TABLE t_named AS
  SELECT * FROM conveyor.enqueue('tap.enqueue.SendEmail', '[42]', queue => 'tap_enqueue_mail', priority => 10);

SELECT results_eq(
  $$SELECT job_class, args, queue, priority, run_at, data, maximum_retry_count FROM t_named$$,
  $$VALUES ('tap.enqueue.SendEmail'::text, '[42]'::jsonb, 'tap_enqueue_mail'::text, 10::smallint, now(),
            '{}'::jsonb, 15)$$,
  'named notation: queue and priority set, the parameters not named keep their defaults');

CREATE TEMP TABLE t_named_all AS
  SELECT * FROM conveyor.enqueue(maximum_retry_count => 0, data => '{"k": "v"}',
                                 run_at => now() + interval '1 hour', priority => 0,
                                 queue => 'tap_enqueue_q', args => '["x"]', job_class => 'tap.enqueue.Named');

SELECT results_eq(
  $$SELECT job_class, args, queue, priority, run_at, data, maximum_retry_count FROM t_named_all$$,
  $$VALUES ('tap.enqueue.Named'::text, '["x"]'::jsonb, 'tap_enqueue_q'::text, 0::smallint,
            now() + interval '1 hour', '{"k": "v"}'::jsonb, 0)$$,
  'named notation in any order sets every parameter');

SELECT is((SELECT id FROM conveyor.enqueue('tap.enqueue.IdOnly')) > (SELECT id FROM t_named_all), true,
  'SELECT id FROM conveyor.enqueue(...) gives a new, larger id');

-- Limits that are allowed -----------------------------------------------------

SELECT lives_ok($$SELECT conveyor.enqueue(repeat('j', 500), queue => repeat('q', 100))$$,
  'a job_class of 500 and a queue of 100 characters are accepted');

SELECT is((SELECT char_length(job_class) FROM conveyor.enqueue(repeat('é', 500))), 500,
  'the job_class limit counts characters, not bytes (500 two-byte characters accepted)');

SELECT lives_ok($$SELECT conveyor.enqueue('tap.enqueue.Bounds', priority => 0)$$, 'priority 0 is accepted');
SELECT lives_ok($$SELECT conveyor.enqueue('tap.enqueue.Bounds', priority => 32767)$$, 'priority 32767 is accepted');
SELECT lives_ok($$SELECT conveyor.enqueue('tap.enqueue.Bounds', maximum_retry_count => 0)$$,
  'maximum_retry_count 0 is accepted');

-- Bad input: SQLSTATE and a message that names the field ------------------------

SELECT throws_ok($$SELECT conveyor.enqueue(NULL)$$, '22004',
  'conveyor.enqueue: job_class must not be NULL', 'NULL job_class raises 22004 naming job_class');
SELECT throws_ok($$SELECT conveyor.enqueue('')$$, '22023',
  'conveyor.enqueue: job_class must not be empty', 'empty job_class raises 22023 naming job_class');
SELECT throws_ok($$SELECT conveyor.enqueue(repeat('j', 501))$$, '22001',
  'conveyor.enqueue: job_class must be at most 500 characters, not 501',
  'a job_class of 501 characters raises 22001 naming job_class');
SELECT throws_ok($$SELECT conveyor.enqueue('tap.enqueue.Bad', NULL)$$, '22004',
  'conveyor.enqueue: args must not be NULL', 'NULL args raises 22004 naming args');
SELECT throws_ok($$SELECT conveyor.enqueue('tap.enqueue.Bad', '{"a": 1}')$$, '22023',
  'conveyor.enqueue: args must be a JSON array, not object', 'args that is an object raises 22023 naming args');
SELECT throws_ok($$SELECT conveyor.enqueue('tap.enqueue.Bad', '42')$$, '22023',
  'conveyor.enqueue: args must be a JSON array, not number', 'args that is a number raises 22023 naming args');
SELECT throws_ok($$SELECT conveyor.enqueue('tap.enqueue.Bad', 'null')$$, '22023',
  'conveyor.enqueue: args must be a JSON array, not null', 'args that is JSON null raises 22023 naming args');
SELECT throws_ok($$SELECT conveyor.enqueue('tap.enqueue.Bad', queue => NULL)$$, '22004',
  'conveyor.enqueue: queue must not be NULL', 'NULL queue raises 22004 naming queue');
SELECT throws_ok($$SELECT conveyor.enqueue('tap.enqueue.Bad', queue => '')$$, '22023',
  'conveyor.enqueue: queue must not be empty', 'empty queue raises 22023 naming queue');
SELECT throws_ok($$SELECT conveyor.enqueue('tap.enqueue.Bad', queue => repeat('q', 101))$$, '22001',
  'conveyor.enqueue: queue must be at most 100 characters, not 101',
  'a queue of 101 characters raises 22001 naming queue');
SELECT throws_ok($$SELECT conveyor.enqueue('tap.enqueue.Bad', priority => NULL)$$, '22004',
  'conveyor.enqueue: priority must not be NULL', 'NULL priority raises 22004 naming priority');
SELECT throws_ok($$SELECT conveyor.enqueue('tap.enqueue.Bad', priority => -1)$$, '22003',
  'conveyor.enqueue: priority must be between 0 and 32767, not -1', 'priority -1 raises 22003 naming priority');
SELECT throws_ok($$SELECT conveyor.enqueue('tap.enqueue.Bad', priority => 32768)$$, '22003',
  'conveyor.enqueue: priority must be between 0 and 32767, not 32768', 'priority 32768 raises 22003 naming priority');
SELECT throws_ok($$SELECT conveyor.enqueue('tap.enqueue.Bad', run_at => NULL)$$, '22004',
  'conveyor.enqueue: run_at must not be NULL', 'NULL run_at raises 22004 naming run_at');
SELECT throws_ok($$SELECT conveyor.enqueue('tap.enqueue.Bad', data => NULL)$$, '22004',
  'conveyor.enqueue: data must not be NULL', 'NULL data raises 22004 naming data');
SELECT throws_ok($$SELECT conveyor.enqueue('tap.enqueue.Bad', data => '[1]')$$, '22023',
  'conveyor.enqueue: data must be a JSON object, not array', 'data that is an array raises 22023 naming data');
SELECT throws_ok($$SELECT conveyor.enqueue('tap.enqueue.Bad', data => '"s"')$$, '22023',
  'conveyor.enqueue: data must be a JSON object, not string', 'data that is a string raises 22023 naming data');
SELECT throws_ok($$SELECT conveyor.enqueue('tap.enqueue.Bad', maximum_retry_count => NULL)$$, '22004',
  'conveyor.enqueue: maximum_retry_count must not be NULL',
  'NULL maximum_retry_count raises 22004 naming maximum_retry_count');
SELECT throws_ok($$SELECT conveyor.enqueue('tap.enqueue.Bad', maximum_retry_count => -1)$$, '22023',
  'conveyor.enqueue: maximum_retry_count must not be negative, not -1',
  'a negative maximum_retry_count raises 22023 naming maximum_retry_count');
SELECT throws_ok($$SELECT conveyor.enqueue('', '{}', '', -5, NULL, '[]', -1)$$, '22023',
  'conveyor.enqueue: job_class must not be empty',
  'with several faults the first in parameter order (job_class) is reported');
SELECT throws_ok($$SELECT conveyor.enqueue('tap.enqueue.Bad', '[]', 'default', 100, now(), '{}', 1, 'tap.key', 'ck', '{}', 1, 'extra')$$,
  '42883', NULL, 'an unknown extra parameter is rejected (no such function)');

SELECT is((SELECT count(*) FROM conveyor.jobs WHERE job_class = 'tap.enqueue.Bad'), 0::bigint,
  'no failed enqueue left a job behind');

-- Transactions and the trigger --------------------------------------------------

SAVEPOINT before_rolled_back_enqueue;
SELECT id AS rolled_back_id FROM conveyor.enqueue('tap.enqueue.RolledBack') \gset
ROLLBACK TO SAVEPOINT before_rolled_back_enqueue;

SELECT is((SELECT count(*) FROM conveyor.jobs WHERE id = :rolled_back_id), 0::bigint,
  'a rolled-back enqueue leaves no job');

SELECT lives_ok($$SELECT conveyor.enqueue('tap.enqueue.Future', run_at => now() + interval '1 day')$$,
  'a job scheduled in the future is accepted');

SELECT is((SELECT run_at FROM conveyor.enqueue('tap.enqueue.Past', run_at => '2001-01-01 00:00:00+00')),
  '2001-01-01 00:00:00+00'::timestamptz, 'a run_at in the past is stored as given');

SELECT is((SELECT created_at FROM conveyor.enqueue('tap.enqueue.Past', run_at => '2001-01-01 00:00:00+00')),
  now(), 'created_at is now(), whatever run_at says');

-- The fast path and the statement the Python client sends ------------------------

-- A valid job is checked by one expression inside enqueue; job_problem only
-- runs to explain a rejected one. Counted with the transaction's function
-- statistics (pl functions are tracked from here on).
SET LOCAL track_functions = 'pl';
CREATE TEMP VIEW t_calls AS
  SELECT f.funcname, sum(f.calls)::bigint AS calls
    FROM pg_catalog.pg_stat_xact_user_functions AS f
   WHERE f.schemaname = 'conveyor' GROUP BY f.funcname;

SELECT lives_ok($$
  SELECT conveyor.enqueue('tap.enqueue.Fast');
  SELECT conveyor.enqueue(repeat('j', 500), '[]', repeat('q', 100), 0, now(), '{}', 0);
  SELECT conveyor.enqueue(repeat('é', 500), '[[]]', 'q', 32767, '-infinity', '{"a": {}}', 2147483647);
$$, 'valid jobs at every limit are accepted');

SELECT results_eq(
  $$SELECT funcname, calls FROM t_calls WHERE funcname IN ('enqueue', 'job_problem') ORDER BY funcname$$,
  $$VALUES ('enqueue'::name, 3::bigint)$$,
  'valid jobs, even at every limit, never call job_problem');

SELECT throws_ok($$SELECT conveyor.enqueue('tap.enqueue.Bad', priority => 32768)$$, '22003',
  'conveyor.enqueue: priority must be between 0 and 32767, not 32768',
  'a job the fast check rejects still gets job_problem''s SQLSTATE and message');

SELECT is((SELECT calls FROM t_calls WHERE funcname = 'job_problem'), 1::bigint,
  'a rejected job calls job_problem once, to name the broken rule');

CREATE TEMP TABLE t_field AS
  SELECT (conveyor.enqueue('tap.enqueue.FieldSelect', '[5]', queue => 'tap_enqueue_field')).id;

SELECT results_eq(
  $$SELECT id, job_class, args FROM conveyor.jobs WHERE queue = 'tap_enqueue_field'$$,
  $$SELECT id, 'tap.enqueue.FieldSelect'::text, '[5]'::jsonb FROM t_field$$,
  'SELECT (conveyor.enqueue(...)).id, as the Python client sends it, inserts one job and returns its id');


-- Unique keys ------------------------------------------------------------------

CREATE TEMP TABLE t_key AS SELECT * FROM conveyor.enqueue('tap.enqueue.Unique', '[1]', 'tap_enqueue_uk', unique_key => 'tap.uk.a');

SELECT is((SELECT unique_key FROM t_key), 'tap.uk.a', 'enqueue stores unique_key and returns it in the row');

SELECT results_eq(
  $$SELECT * FROM conveyor.enqueue('tap.enqueue.Other', '[2]', 'tap_enqueue_uk', unique_key => 'tap.uk.a')$$,
  $$SELECT * FROM t_key$$,
  'an enqueue with the key of a ready job inserts nothing and returns that job''s row, unchanged');

SELECT is((SELECT count(*) FROM conveyor.jobs WHERE queue = 'tap_enqueue_uk'), 1::bigint,
  'the repeated enqueue left one job');

SELECT isnt((SELECT id FROM conveyor.enqueue('tap.enqueue.Unique', queue => 'tap_enqueue_uk', unique_key => 'tap.uk.b')),
  (SELECT id FROM t_key), 'another key is another job');

SELECT isnt((SELECT id FROM conveyor.enqueue('tap.enqueue.Plain', queue => 'tap_enqueue_uk')),
  (SELECT id FROM conveyor.enqueue('tap.enqueue.Plain', queue => 'tap_enqueue_uk')),
  'jobs without a key never collide');

CREATE TEMP TABLE t_later AS
  SELECT * FROM conveyor.enqueue('tap.enqueue.Later', queue => 'tap_enqueue_uk', run_at => now() + interval '1 day',
                                 unique_key => 'tap.uk.later');
SELECT is((SELECT id FROM conveyor.enqueue('tap.enqueue.Later', queue => 'tap_enqueue_uk', unique_key => 'tap.uk.later')),
  (SELECT id FROM t_later), 'a scheduled job holds its key');

SELECT lives_ok($$SELECT conveyor.retry_job((SELECT id FROM t_key), 'boom', 'line 1')$$, 'retry_job records an error');
SELECT is((SELECT id FROM conveyor.enqueue('tap.enqueue.Unique', queue => 'tap_enqueue_uk', unique_key => 'tap.uk.a')),
  (SELECT id FROM t_key), 'a job awaiting a retry holds its key');

SELECT ok(conveyor.finish_job((SELECT id FROM t_key)), 'finish_job resolves the key''s job');
SELECT isnt((SELECT id FROM conveyor.enqueue('tap.enqueue.Unique', queue => 'tap_enqueue_uk', unique_key => 'tap.uk.a')),
  (SELECT id FROM t_key), 'a finished job frees its key: the next enqueue inserts a new job');

SELECT ok(conveyor.expire_job((SELECT id FROM t_later)), 'expire_job resolves the scheduled job');
CREATE TEMP TABLE t_after_expire AS
  SELECT * FROM conveyor.enqueue('tap.enqueue.Later', queue => 'tap_enqueue_uk', unique_key => 'tap.uk.later');
SELECT isnt((SELECT id FROM t_after_expire), (SELECT id FROM t_later), 'an expired job frees its key');

SELECT ok(conveyor.destroy_job((SELECT id FROM t_after_expire)), 'destroy_job deletes the key''s job');
SELECT isnt((SELECT id FROM conveyor.enqueue('tap.enqueue.Later', queue => 'tap_enqueue_uk', unique_key => 'tap.uk.later')),
  (SELECT id FROM t_after_expire), 'a destroyed job frees its key');

SELECT throws_ok($$SELECT conveyor.enqueue('tap.enqueue.Bad', unique_key => '')$$, '22023',
  'conveyor.enqueue: unique_key must not be empty', 'an empty unique_key raises 22023');
SELECT throws_ok($$SELECT conveyor.enqueue('tap.enqueue.Bad', unique_key => repeat('k', 501))$$, '22001',
  'conveyor.enqueue: unique_key must be at most 500 characters, not 501', 'a unique_key over 500 characters raises 22001');
SELECT lives_ok($$SELECT conveyor.enqueue('tap.enqueue.Long', queue => 'tap_enqueue_uk', unique_key => repeat('k', 500))$$,
  'a unique_key of 500 characters is accepted');

SET ROLE conveyor_enqueuer;
CREATE TEMP TABLE t_as_enqueuer AS
  SELECT (conveyor.enqueue('tap.enqueue.Role', queue => 'tap_enqueue_uk', unique_key => 'tap.uk.role')).id AS first,
         (conveyor.enqueue('tap.enqueue.Role', queue => 'tap_enqueue_uk', unique_key => 'tap.uk.role')).id AS second;
RESET ROLE;
SELECT is((SELECT second FROM t_as_enqueuer), (SELECT first FROM t_as_enqueuer),
  'conveyor_enqueuer, which cannot read conveyor.jobs, gets the existing job''s id back');

SELECT * FROM finish();
ROLLBACK;
