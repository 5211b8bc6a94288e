-- conveyor.schedules and its functions: set, replace, enable, delete,
-- enqueue_due_schedules (latest missed only, catch-up, data.schedule),
-- next_schedule_at, errors by SQLSTATE, privileges.
BEGIN;
SELECT plan(26);

SELECT is((conveyor.set_schedule('tap.minute', '* * * * *', 'tap.Tick')).name, 'tap.minute', 'set_schedule creates a schedule');
SELECT ok((SELECT next_run_at > now() AND next_run_at <= now() + interval '1 minute' FROM conveyor.schedules WHERE name = 'tap.minute'),
  'its next_run_at is the next occurrence after now()');
SELECT is(conveyor.next_schedule_at(), (SELECT next_run_at FROM conveyor.schedules WHERE name = 'tap.minute'),
  'next_schedule_at gives the earliest next run');
SELECT is((SELECT count(*)::integer FROM conveyor.enqueue_due_schedules()), 0, 'nothing is due yet');

-- Pretend the schedule was last enqueued an hour ago (downtime).
UPDATE conveyor.schedules SET next_run_at = date_trunc('minute', now()) - interval '59 minutes' WHERE name = 'tap.minute';
SELECT is((SELECT count(*)::integer FROM conveyor.enqueue_schedules_due_at(date_trunc('minute', now()))), 1,
  'after downtime only the latest missed occurrence is enqueued');
SELECT is((SELECT data #>> '{schedule,name}' FROM conveyor.jobs WHERE job_class = 'tap.Tick'), 'tap.minute', 'the job carries the schedule name in data');
SELECT is((SELECT (data #>> '{schedule,at}')::timestamptz FROM conveyor.jobs WHERE job_class = 'tap.Tick'), date_trunc('minute', now()),
  '... and the occurrence in data.schedule.at');
SELECT is((SELECT run_at FROM conveyor.jobs WHERE job_class = 'tap.Tick'), date_trunc('minute', now()), 'the job runs at its occurrence');
SELECT is((SELECT next_run_at FROM conveyor.schedules WHERE name = 'tap.minute'), date_trunc('minute', now()) + interval '1 minute',
  'next_run_at moves past what was enqueued');
SELECT is((SELECT count(*)::integer FROM conveyor.enqueue_schedules_due_at(date_trunc('minute', now()))), 0, 'a second call enqueues nothing');

SELECT lives_ok($$SELECT conveyor.set_schedule('tap.catch', '*/10 * * * *', 'tap.Catch', catch_up => true)$$, 'a catch-up schedule');
UPDATE conveyor.schedules SET next_run_at = '2026-01-01 00:00+00' WHERE name = 'tap.catch';
SELECT is((SELECT count(*)::integer FROM conveyor.enqueue_schedules_due_at('2026-01-01 01:00+00')), 7,
  'catch_up enqueues every missed occurrence (00:00 to 01:00 every 10 minutes)');

SELECT lives_ok($$SELECT conveyor.set_schedule('tap.catch', '*/10 * * * *', 'tap.Catch', args => '[1]', catch_up => true)$$, 'replacing keeps the timing');
SELECT is((SELECT next_run_at FROM conveyor.schedules WHERE name = 'tap.catch'), '2026-01-01 01:10+00', '... and the pending occurrence');
SELECT is(conveyor.set_schedule_enabled('tap.catch', false), true, 'set_schedule_enabled disables');
SELECT is((SELECT count(*)::integer FROM conveyor.enqueue_schedules_due_at('2026-01-02 00:00+00') AS e(job_id)
            JOIN conveyor.jobs AS j ON j.id = e.job_id WHERE j.job_class = 'tap.Catch'), 0, 'a disabled schedule enqueues nothing');
SELECT is(conveyor.delete_schedule('tap.catch'), true, 'delete_schedule deletes');
SELECT is(conveyor.delete_schedule('tap.catch'), false, '... and says false when there is none');

-- A schedule that cannot be enqueued (its time zone gone with a tzdata
-- upgrade) is skipped with a WARNING (kept out of the TAP output); the others still are.
SET LOCAL client_min_messages = error;
SELECT conveyor.set_schedule('tap.good', '0 * * * *', 'tap.Good');
SELECT conveyor.set_schedule('tap.broken', '0 * * * *', 'tap.Broken', catch_up => true);
UPDATE conveyor.schedules SET next_run_at = '2026-02-01 00:00+00' WHERE name IN ('tap.good', 'tap.broken');
UPDATE conveyor.schedules SET time_zone = 'Gone/Zone' WHERE name = 'tap.broken';
CREATE TEMP TABLE tap_returned AS SELECT * FROM conveyor.enqueue_schedules_due_at('2026-02-01 03:00+00') AS e(job_id);
SELECT is((SELECT array_agg(j.job_class) FROM tap_returned AS r JOIN conveyor.jobs AS j ON j.id = r.job_id),
  ARRAY['tap.Good'], 'a broken schedule is skipped, the good one enqueued');
SELECT is((SELECT count(*)::integer FROM tap_returned), 1, 'no id of a rolled-back job is returned');

SELECT throws_ok($$SELECT conveyor.set_schedule('tap.bad', '* * * * * *', 'X')$$, '22023', NULL, 'a malformed cron: 22023');
SELECT throws_ok($$SELECT conveyor.set_schedule('tap.bad', '* * * * *', 'X', time_zone => 'Mars/Base')$$, '22023', NULL, 'an unknown time zone: 22023');
SELECT throws_ok($$SELECT conveyor.set_schedule('tap.bad', '* * * * *', 'X', args => '{}')$$, '22023', NULL, 'args not an array: 22023, as enqueue');
SELECT throws_ok($$SELECT conveyor.set_schedule('', '* * * * *', 'X')$$, '22023', NULL, 'an empty name: 22023');

SET LOCAL ROLE conveyor_worker;
SELECT lives_ok($$SELECT conveyor.enqueue_due_schedules(); SELECT conveyor.next_schedule_at()$$,
  'conveyor_worker may call enqueue_due_schedules and next_schedule_at');
SELECT throws_ok($$SELECT conveyor.set_schedule('tap.w', '* * * * *', 'X')$$, '42501', NULL, 'conveyor_worker may not set schedules');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
