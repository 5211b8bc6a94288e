-- conveyor.retry_job(id, error_message, error_backtrace, delay, expire, attempted_at, attempted_by)
--
-- now() is fixed for the whole transaction, so run_at - now() is exact.
BEGIN;
SELECT plan(48);

SELECT has_function('conveyor', 'retry_job', ARRAY['bigint', 'text', 'text', 'double precision', 'boolean', 'timestamp with time zone', 'text'],
  'conveyor.retry_job(bigint, text, text, double precision, boolean, timestamptz, text) exists');
SELECT hasnt_function('conveyor', 'retry_job', ARRAY['bigint', 'text', 'text', 'double precision'],
  'v0.1.0''s retry_job without expire is gone (no second overload)');
SELECT function_returns('conveyor', 'retry_job', ARRAY['bigint', 'text', 'text', 'double precision', 'boolean', 'timestamp with time zone', 'text'],
  'setof conveyor.jobs', 'conveyor.retry_job returns SETOF conveyor.jobs');

CREATE TEMP TABLE fx (name text PRIMARY KEY, id bigint NOT NULL);
INSERT INTO fx SELECT n, id FROM unnest(ARRAY['backoff', 'savepoint', 'bystander']) WITH ORDINALITY AS u(n, o),
  LATERAL conveyor.enqueue('tap.retry.Job', jsonb_build_array(n), queue => 'tap_retry', priority => o::integer,
                           run_at => now() - interval '1 minute');
INSERT INTO fx SELECT 'delay', id FROM conveyor.enqueue('tap.retry.Job', queue => 'tap_retry_other');
INSERT INTO fx SELECT 'truncate', id FROM conveyor.enqueue('tap.retry.Job', queue => 'tap_retry_other');
INSERT INTO fx SELECT 'max_0', id FROM conveyor.enqueue('tap.retry.Job', queue => 'tap_retry_other', maximum_retry_count => 0,
                                                        run_at => '2020-02-02 00:00:00+00');
INSERT INTO fx SELECT 'max_default', id FROM conveyor.enqueue('tap.retry.Job', queue => 'tap_retry_other', run_at => '2020-02-02 00:00:00+00');
INSERT INTO fx SELECT 'finished', id FROM conveyor.enqueue('tap.retry.Job', queue => 'tap_retry_other');
INSERT INTO fx SELECT 'expired', id FROM conveyor.enqueue('tap.retry.Job', queue => 'tap_retry_other');
UPDATE conveyor.jobs SET finished_at = '2001-01-01 00:00:00+00' WHERE id = (SELECT id FROM fx WHERE name = 'finished');
UPDATE conveyor.jobs SET expired_at = '2001-01-01 00:00:00+00' WHERE id = (SELECT id FROM fx WHERE name = 'expired');
INSERT INTO fx SELECT 'give_up', id FROM conveyor.enqueue('tap.retry.Job', queue => 'tap_retry_other',
                                                          run_at => '2020-02-02 00:00:00+00');
INSERT INTO fx SELECT 'missing', max(id) + 1000000 FROM fx;

SELECT id AS backoff FROM fx WHERE name = 'backoff' \gset
SELECT id AS savepoint_job FROM fx WHERE name = 'savepoint' \gset
SELECT id AS bystander FROM fx WHERE name = 'bystander' \gset
SELECT id AS delay_job FROM fx WHERE name = 'delay' \gset
SELECT id AS truncate_job FROM fx WHERE name = 'truncate' \gset
SELECT id AS max_0 FROM fx WHERE name = 'max_0' \gset
SELECT id AS max_default FROM fx WHERE name = 'max_default' \gset
SELECT id AS finished FROM fx WHERE name = 'finished' \gset
SELECT id AS expired FROM fx WHERE name = 'expired' \gset
SELECT id AS missing FROM fx WHERE name = 'missing' \gset

SELECT is((SELECT count(*) FROM conveyor.lock_jobs(ARRAY['tap_retry'], 10)), 3::bigint,
  'fixture: three jobs locked by this session');

-- The first retry -----------------------------------------------------------------

CREATE TEMP TABLE t_first AS SELECT * FROM conveyor.retry_job(:backoff, 'boom', 'line 1');

SELECT is((SELECT count(*) FROM t_first), 1::bigint, 'retry_job returns one row');
SELECT results_eq(
  $$SELECT error_count, last_error_message, last_error_backtrace, run_at - now(), finished_at, expired_at FROM t_first$$,
  $$VALUES (1, 'boom'::text, 'line 1'::text, interval '4 seconds', NULL::timestamptz, NULL::timestamptz)$$,
  'the first error: error_count 1, message and backtrace stored, run_at = now() + 4 s, not resolved');
SELECT results_eq(
  $$SELECT j.* FROM conveyor.jobs AS j JOIN t_first AS t ON t.id = j.id$$,
  $$SELECT * FROM t_first$$,
  'the row retry_job returns is the row it stored');
SELECT is((SELECT count(*) FROM pg_catalog.pg_locks
            WHERE locktype = 'advisory' AND objsubid = 2 AND pid = pg_catalog.pg_backend_pid()
              AND objid::bigint = :backoff),
  1::bigint, 'the retried job stays locked until the transaction ends');

-- Backoff: error_count^4 + 3 seconds --------------------------------------------------

SELECT is((SELECT run_at - now() FROM conveyor.retry_job(:backoff, 'boom 2')), interval '19 seconds',
  'after the 2nd error run_at = now() + 19 s');
SELECT is((SELECT run_at - now() FROM conveyor.retry_job(:backoff, 'boom 3')), interval '84 seconds',
  'after the 3rd error run_at = now() + 84 s');
SELECT is((SELECT run_at - now() FROM conveyor.retry_job(:backoff, 'boom 4')), interval '259 seconds',
  'after the 4th error run_at = now() + 259 s');
SELECT is((SELECT run_at - now() FROM conveyor.retry_job(:backoff, 'boom 5')), interval '628 seconds',
  'after the 5th error run_at = now() + 628 s');
SELECT results_eq(
  $$SELECT error_count, last_error_message, last_error_backtrace, expired_at FROM conveyor.jobs
     WHERE id = (SELECT id FROM fx WHERE name = 'backoff')$$,
  $$VALUES (5, 'boom 5'::text, NULL::text, NULL::timestamptz)$$,
  'each retry counts one error and stores the latest error only');

-- A given delay ------------------------------------------------------------------------

SELECT is((SELECT run_at - now() FROM conveyor.retry_job(:delay_job, delay => 30)), interval '30 seconds',
  'delay => 30 schedules the job 30 s from now');
SELECT is((SELECT run_at - now() FROM conveyor.retry_job(:delay_job, delay => 1.5)), interval '1.5 seconds',
  'a fractional delay is kept to the fraction');
SELECT is((SELECT run_at - now() FROM conveyor.retry_job(:delay_job, delay => 0)), interval '0',
  'delay => 0 makes the job ready again at once');
SELECT is((SELECT error_count FROM conveyor.jobs WHERE id = :delay_job), 3,
  'a given delay still counts the error');
SELECT is((SELECT run_at - now() FROM conveyor.retry_job(:delay_job, 'named', delay => 86400 * 365)), interval '31536000 seconds',
  'a delay of a year is accepted');

-- Truncation -----------------------------------------------------------------------------

SELECT results_eq(
  $$SELECT char_length(last_error_message), char_length(last_error_backtrace)
      FROM conveyor.retry_job((SELECT id FROM fx WHERE name = 'truncate'), repeat('m', 1500), repeat('b', 20000))$$,
  $$VALUES (1000, 10000)$$,
  'the message is cut to 1,000 and the backtrace to 10,000 characters');
SELECT results_eq(
  $$SELECT last_error_message, last_error_backtrace FROM conveyor.jobs WHERE id = (SELECT id FROM fx WHERE name = 'truncate')$$,
  $$VALUES (repeat('m', 1000), repeat('b', 10000))$$,
  'the stored text is the beginning of what was given');
SELECT results_eq(
  $$SELECT last_error_message, last_error_backtrace
      FROM conveyor.retry_job((SELECT id FROM fx WHERE name = 'truncate'), repeat('é', 1000), repeat('ü', 10000))$$,
  $$VALUES (repeat('é', 1000), repeat('ü', 10000))$$,
  'a message of exactly 1,000 and a backtrace of exactly 10,000 (multi-byte) characters are kept whole');

-- Expiry after maximum_retry_count ---------------------------------------------------------

SELECT results_eq(
  $$SELECT error_count, expired_at, run_at, last_error_message FROM conveyor.retry_job((SELECT id FROM fx WHERE name = 'max_0'), 'only once')$$,
  $$VALUES (1, now(), '2020-02-02 00:00:00+00'::timestamptz, 'only once'::text)$$,
  'maximum_retry_count 0: the first error expires the job, keeps its run_at and records the error');

INSERT INTO fx SELECT 'max_0_delay', id FROM conveyor.enqueue('tap.retry.Job', queue => 'tap_retry_other', maximum_retry_count => 0,
                                                              run_at => '2020-02-02 00:00:00+00');
SELECT results_eq(
  $$SELECT error_count, expired_at, run_at FROM conveyor.retry_job((SELECT id FROM fx WHERE name = 'max_0_delay'), delay => 10)$$,
  $$VALUES (1, now(), '2020-02-02 00:00:00+00'::timestamptz)$$,
  'past the maximum a given delay does not matter: the job is expired, its run_at kept');

UPDATE conveyor.jobs SET error_count = 14 WHERE id = :max_default;
SELECT results_eq(
  $$SELECT error_count, expired_at, run_at - now() FROM conveyor.retry_job((SELECT id FROM fx WHERE name = 'max_default'))$$,
  $$VALUES (15, NULL::timestamptz, interval '50628 seconds')$$,
  'default maximum 15: the 15th error still schedules a retry (15^4 + 3 s)');
UPDATE conveyor.jobs SET run_at = '2020-02-02 00:00:00+00' WHERE id = :max_default;
SELECT results_eq(
  $$SELECT error_count, expired_at, run_at FROM conveyor.retry_job((SELECT id FROM fx WHERE name = 'max_default'), 'sixteenth')$$,
  $$VALUES (16, now(), '2020-02-02 00:00:00+00'::timestamptz)$$,
  'default maximum 15: with error_count 15 the next error expires the job and keeps its run_at');
SELECT is((SELECT count(*) FROM conveyor.retry_job(:max_default, 'again')), 0::bigint,
  'an expired job is not retried again: no row');
SELECT is((SELECT error_count FROM conveyor.jobs WHERE id = :max_default), 16,
  'retrying an expired job leaves its error_count alone');

-- expire => true: giving up after an error records it ---------------------------------------

SELECT results_eq(
  $$SELECT error_count, expired_at, run_at, last_error_message, last_error_backtrace
      FROM conveyor.retry_job((SELECT id FROM fx WHERE name = 'give_up'), 'gave up', 'at line 3', expire => true)$$,
  $$VALUES (1, now(), '2020-02-02 00:00:00+00'::timestamptz, 'gave up'::text, 'at line 3'::text)$$,
  'expire => true under maximum_retry_count: the error is recorded, the job expired at once, its run_at kept');
SELECT is((SELECT count(*) FROM conveyor.retry_job((SELECT id FROM fx WHERE name = 'give_up'), 'again', expire => true)), 0::bigint,
  'expire => true on an expired job: no row');
SELECT results_eq(
  $$SELECT error_count, last_error_message FROM conveyor.jobs WHERE id = (SELECT id FROM fx WHERE name = 'give_up')$$,
  $$VALUES (1, 'gave up'::text)$$,
  'a second expire leaves the recorded error alone');
SELECT throws_ok($$SELECT * FROM conveyor.retry_job((SELECT id FROM fx WHERE name = 'delay'), 'x', expire => NULL)$$, '22004',
  'conveyor.retry_job: expire must be true or false, not NULL', 'a NULL expire raises 22004');

-- Missing, finished, expired -----------------------------------------------------------------

SELECT is((SELECT count(*) FROM conveyor.retry_job(:missing, 'nobody')), 0::bigint,
  'retry_job of an id that does not exist returns no row');
SELECT is((SELECT count(*) FROM conveyor.retry_job(:finished, 'late')), 0::bigint,
  'retry_job of a finished job returns no row');
SELECT results_eq(
  $$SELECT error_count, last_error_message, finished_at, expired_at FROM conveyor.jobs WHERE id = (SELECT id FROM fx WHERE name = 'finished')$$,
  $$VALUES (0, NULL::text, '2001-01-01 00:00:00+00'::timestamptz, NULL::timestamptz)$$,
  'retry_job leaves a finished job as it was');
SELECT is((SELECT count(*) FROM conveyor.retry_job(:expired, 'late')), 0::bigint,
  'retry_job of an expired job returns no row');
SELECT results_eq(
  $$SELECT error_count, last_error_message, finished_at, expired_at FROM conveyor.jobs WHERE id = (SELECT id FROM fx WHERE name = 'expired')$$,
  $$VALUES (0, NULL::text, NULL::timestamptz, '2001-01-01 00:00:00+00'::timestamptz)$$,
  'retry_job leaves an expired job as it was');

-- Bad delay ------------------------------------------------------------------------------------

SELECT throws_ok($$SELECT * FROM conveyor.retry_job((SELECT id FROM fx WHERE name = 'delay'), delay => -1)$$, '22023',
  'conveyor.retry_job: delay must be a number of seconds >= 0, not -1', 'a negative delay raises 22023');
SELECT throws_ok($$SELECT * FROM conveyor.retry_job((SELECT id FROM fx WHERE name = 'delay'), delay => 'NaN')$$, '22023',
  'conveyor.retry_job: delay must be a number of seconds >= 0, not NaN', 'a NaN delay raises 22023');
SELECT throws_ok($$SELECT * FROM conveyor.retry_job((SELECT id FROM fx WHERE name = 'delay'), delay => 'Infinity')$$, '22008',
  NULL, 'an infinite delay raises 22008');
SELECT throws_ok($$SELECT * FROM conveyor.retry_job((SELECT id FROM fx WHERE name = 'delay'), delay => 1e300)$$, '22008',
  NULL, 'a delay too large for a timestamp raises 22008');
SELECT throws_ok($$SELECT * FROM conveyor.retry_job((SELECT id FROM fx WHERE name = 'missing'), delay => -0.5)$$, '22023',
  'conveyor.retry_job: delay must be a number of seconds >= 0, not -0.5', 'a negative delay is rejected even for a missing id');
SELECT is((SELECT error_count FROM conveyor.jobs WHERE id = :delay_job), 4,
  'a rejected retry records no error');

-- A job the caller does not hold ---------------------------------------------------------------

SELECT is((SELECT error_count FROM conveyor.retry_job(:delay_job, 'from job code')), 5,
  'retry_job of a job the caller does not hold works (job code retries on its own connection)');
SELECT is((SELECT count(*) FROM pg_catalog.pg_locks
            WHERE locktype = 'advisory' AND objsubid = 2 AND objid::bigint = :delay_job),
  0::bigint, 'retry_job of a job nobody holds takes no lock on it');

-- The session-level lock is gone once the transaction ends --------------------------------------

SAVEPOINT retry;
SELECT (SELECT error_count FROM conveyor.retry_job(:savepoint_job, 'rolled back')) AS savepoint_error_count \gset
ROLLBACK TO SAVEPOINT retry;

SELECT is(:savepoint_error_count::integer, 1, 'retry_job of the savepoint job returned its row');
SELECT is((SELECT count(*) FROM pg_catalog.pg_locks
            WHERE locktype = 'advisory' AND objsubid = 2 AND pid = pg_catalog.pg_backend_pid()
              AND objid::bigint = :savepoint_job),
  0::bigint, 'once the transaction is over the session no longer holds the job: retry_job released its lock');
SELECT is((SELECT count(*) FROM pg_catalog.pg_locks
            WHERE locktype = 'advisory' AND objsubid = 2 AND pid = pg_catalog.pg_backend_pid()
              AND objid::bigint = :bystander),
  1::bigint, 'another job the session holds keeps its lock');
SELECT results_eq(
  $$SELECT id, error_count FROM conveyor.lock_jobs_by_id(ARRAY(SELECT id FROM fx WHERE name = 'savepoint'), queues => (SELECT array_agg(DISTINCT queue) FROM conveyor.jobs))$$,
  $$SELECT id, 0 FROM fx WHERE name = 'savepoint'$$,
  'a rolled-back retry leaves the job ready, unlocked and without the error');

SELECT * FROM finish();
ROLLBACK;
