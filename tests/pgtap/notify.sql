-- The _900_notify trigger (conveyor.tg_jobs__notify). Notifications are
-- delivered at commit, so this file cannot see them: it proves the trigger is
-- in place and that inserts succeed through every branch of it (no worker, a
-- targeted worker, workers that are not targeted, notifications switched
-- off, more than 64 jobs, 10,000 jobs). Delivery and payloads are tested
-- from pytest with a listening connection.
BEGIN;
SELECT plan(20);

SELECT has_trigger('conveyor', 'jobs', '_900_notify', 'conveyor.jobs has the trigger _900_notify');
SELECT trigger_is('conveyor', 'jobs', '_900_notify', 'conveyor', 'tg_jobs__notify',
  '_900_notify executes conveyor.tg_jobs__notify()');
SELECT function_returns('conveyor', 'tg_jobs__notify', ARRAY[]::text[], 'trigger',
  'conveyor.tg_jobs__notify() is a trigger function');
SELECT throws_ok($$SELECT conveyor.tg_jobs__notify()$$, '0A000', NULL,
  'the trigger function cannot be called directly');

-- No worker registered (the registry is emptied inside this transaction only).
DELETE FROM conveyor.lockers;

SELECT lives_ok($$SELECT conveyor.enqueue('tap.notify.NoWorker', queue => 'tap_notify')$$,
  'enqueue succeeds with no worker registered');
SELECT lives_ok($$SELECT conveyor.enqueue_many('[{"job_class": "tap.notify.NoWorker", "queue": "tap_notify"},
                                                 {"job_class": "tap.notify.NoWorker", "queue": "tap_notify"}]')$$,
  'enqueue_many succeeds with no worker registered');

-- This session as a listening worker, plus registry rows the trigger must not
-- target: one not listening, one serving other queues, one whose workers only
-- take urgent jobs.
SELECT is(conveyor.register_locker('{tap_notify,tap_notify_b}', '{10,NULL}'),
  'conveyor_worker_' || pg_catalog.pg_backend_pid(), 'fixture: this session registered as a listening worker');
INSERT INTO conveyor.lockers (pid, queues, worker_priorities, max_priority, listening)
  VALUES (-101, '{tap_notify}', '{NULL}', NULL, false),
         (-102, '{tap_notify_elsewhere}', '{NULL}', NULL, true),
         (-103, '{tap_notify}', '{5}', 5, true);

SELECT lives_ok($$SELECT conveyor.enqueue('tap.notify.Ready', queue => 'tap_notify')$$,
  'enqueue of a ready job for a registered worker succeeds');
SELECT lives_ok($$SELECT conveyor.enqueue('tap.notify.Urgent', queue => 'tap_notify', priority => 0)$$,
  'enqueue of an urgent ready job (two workers can take it) succeeds');
SELECT lives_ok($$SELECT conveyor.enqueue('tap.notify.Future', queue => 'tap_notify', run_at => now() + interval '1 hour')$$,
  'enqueue of a future job succeeds');
SELECT lives_ok($$SELECT conveyor.enqueue('tap.notify.Unserved', queue => 'tap_notify_nobody')$$,
  'enqueue into a queue no worker serves succeeds');
SELECT lives_ok(
  $$SELECT conveyor.enqueue_many((SELECT jsonb_agg(jsonb_build_object('job_class', 'tap.notify.Many', 'queue', q,
                                                                      'priority', g % 20, 'args', jsonb_build_array(g)))
                                    FROM generate_series(1, 100) AS g, unnest(ARRAY['tap_notify', 'tap_notify_b']) AS q))$$,
  'enqueue_many of 200 ready jobs over two queues (more than the 64 announced) succeeds');
SELECT lives_ok(
  $$INSERT INTO conveyor.jobs (job_class, queue) SELECT 'tap.notify.None', 'tap_notify' WHERE false$$,
  'an INSERT of no rows fires the statement trigger without error');

-- Long queue names: one notification lists up to 64 jobs, and PostgreSQL caps
-- a payload at 8000 bytes, so an insert of many ready jobs into a queue with
-- a long (valid) name must not fail.
SELECT lives_ok($$SELECT conveyor.register_locker(ARRAY['tap_notify', repeat('q', 100)], '{NULL}')$$,
  'fixture: this session also serves a queue with a 100-character name');
SELECT lives_ok(
  $$SELECT conveyor.enqueue_many((SELECT jsonb_agg(jsonb_build_object('job_class', 'tap.notify.LongQueue', 'queue', repeat('q', 100)))
                                    FROM generate_series(1, 64)))$$,
  'enqueue_many of 64 ready jobs into a queue with a 100-character name, with a listening worker, succeeds');

-- conveyor.notify = off
SET LOCAL conveyor.notify = off;
SELECT lives_ok($$SELECT conveyor.enqueue('tap.notify.Off', queue => 'tap_notify')$$,
  'enqueue succeeds with SET LOCAL conveyor.notify = off');
SET LOCAL conveyor.notify = 'false';
SELECT lives_ok($$SELECT conveyor.enqueue_many('[{"job_class": "tap.notify.Off", "queue": "tap_notify"}]')$$,
  'enqueue_many succeeds with conveyor.notify = false');
SET LOCAL conveyor.notify = on;

-- 10,000 jobs in one statement, with listening workers registered.
SELECT lives_ok(
  $$SELECT conveyor.enqueue_many((SELECT jsonb_agg(jsonb_build_object('job_class', 'tap.notify.Bulk', 'queue', 'tap_notify',
                                                                      'args', jsonb_build_array(g)))
                                    FROM generate_series(1, 10000) AS g))$$,
  'enqueue_many of 10,000 ready jobs with listening workers succeeds');
SELECT is((SELECT count(*) FROM conveyor.jobs WHERE job_class = 'tap.notify.Bulk'), 10000::bigint,
  'all 10,000 jobs were inserted');
SELECT lives_ok(
  $$INSERT INTO conveyor.jobs (job_class, queue, args)
    SELECT 'tap.notify.BulkInsert', 'tap_notify', jsonb_build_array(g) FROM generate_series(1, 10000) AS g$$,
  'a plain 10,000-row INSERT by the owner with listening workers succeeds');

SELECT * FROM finish();
ROLLBACK;
