-- Flow-control follow-ups: the operator role (conveyor_admin) runs pause,
-- resume and the concurrency limits; the state paused in job_state and jobs_view.
BEGIN;
SELECT plan(27);

CREATE TEMP TABLE fx AS
  SELECT 'ready' AS name, (conveyor.enqueue('tap.ff.A', queue => 'tap_ff')).id UNION ALL
  SELECT 'later', (conveyor.enqueue('tap.ff.A', queue => 'tap_ff', run_at => now() + interval '1 hour')).id UNION ALL
  SELECT 'red', (conveyor.enqueue('tap.ff.B', queue => 'tap_ff_other', labels => ARRAY['tap-ff-red'])).id UNION ALL
  SELECT 'other', (conveyor.enqueue('tap.ff.B', queue => 'tap_ff_other')).id UNION ALL
  SELECT 'done', (conveyor.enqueue('tap.ff.A', queue => 'tap_ff')).id;
UPDATE conveyor.jobs SET finished_at = now() WHERE id = (SELECT id FROM fx WHERE name = 'done');
GRANT SELECT ON fx TO conveyor_admin;

CREATE FUNCTION pg_temp.states() RETURNS text[] LANGUAGE sql AS $$
  SELECT array_agg(f.name || '=' || v.state ORDER BY f.name) FROM conveyor.jobs_view AS v JOIN fx AS f ON f.id = v.id
$$;

-- job_state ---------------------------------------------------------------------------
SELECT is(conveyor.job_state(NULL, NULL, false, now(), 0, now(), true), 'paused', 'job_state: an idle job a pause matches is paused');
SELECT is(conveyor.job_state(NULL, NULL, false, now() + interval '1 hour', 1, now(), true), 'paused', 'paused comes before retrying');
SELECT is(conveyor.job_state(NULL, NULL, false, now() + interval '1 hour', 0, now(), true), 'paused', 'paused comes before scheduled');
SELECT is(conveyor.job_state(NULL, NULL, true, now(), 0, now(), true), 'running', 'a running job stays running when paused');
SELECT is(conveyor.job_state(now(), NULL, false, now(), 0, now(), true), 'finished', 'a finished job stays finished');
SELECT is(conveyor.job_state(NULL, now(), false, now(), 0, now(), true), 'expired', 'an expired job stays expired');
SELECT is(conveyor.job_state(NULL, NULL, false, now(), 0, now(), false), 'ready', 'not paused: ready as before');
SELECT is(conveyor.job_state(NULL, NULL, false, now() + interval '1 hour', 1, now()), 'retrying', 'the six-argument form is unchanged');

-- jobs_view ---------------------------------------------------------------------------
SELECT is(pg_temp.states(), ARRAY['done=finished', 'later=scheduled', 'other=ready', 'ready=ready', 'red=ready'],
  'nothing paused: the states of before');
SELECT conveyor.pause(queue => 'tap_ff');
SELECT is(pg_temp.states(), ARRAY['done=finished', 'later=paused', 'other=ready', 'ready=paused', 'red=ready'],
  'a paused queue: its unresolved idle jobs are paused, ready or scheduled alike; finished stays');
SELECT conveyor.pause(label => 'tap-ff-red');
SELECT is(pg_temp.states(), ARRAY['done=finished', 'later=paused', 'other=ready', 'ready=paused', 'red=paused'],
  'a paused label: the jobs carrying it are paused');
SELECT conveyor.resume(queue => 'tap_ff');
SELECT conveyor.resume(label => 'tap-ff-red');
SELECT conveyor.pause(job_class => 'tap.ff.A');
SELECT is(pg_temp.states(), ARRAY['done=finished', 'later=paused', 'other=ready', 'ready=paused', 'red=ready'],
  'a paused class: its jobs in every queue are paused');
SELECT conveyor.resume(job_class => 'tap.ff.A');
SELECT conveyor.pause(queue => 'tap_ff_other', job_class => 'tap.ff.B');
SELECT is(pg_temp.states(), ARRAY['done=finished', 'later=scheduled', 'other=paused', 'ready=ready', 'red=paused'],
  'a pause of a class in a queue; the resumed queue and label are back to their states');
SELECT lives_ok($$SELECT pg_advisory_lock(conveyor.job_lock_key1(id), conveyor.job_lock_key2(id)) FROM fx WHERE name = 'other'$$,
  'this session locks a paused job (as a worker that locked it before the pause)');
SELECT is(pg_temp.states(), ARRAY['done=finished', 'later=scheduled', 'other=running', 'ready=ready', 'red=paused'],
  'a paused job some session holds is running');
SELECT pg_advisory_unlock_all();
SELECT results_eq($$SELECT queue, ready, scheduled, paused FROM conveyor.queue_stats() WHERE queue LIKE 'tap_ff%' ORDER BY 1$$,
  $$VALUES ('tap_ff', 1::bigint, 1::bigint, 0::bigint), ('tap_ff_other', 0, 0, 2)$$,
  'queue_stats counts paused jobs in paused, not in ready or scheduled');
SELECT is((SELECT count(*) FROM conveyor.list_jobs(state => 'paused', queue => 'tap_ff_other')), 2::bigint,
  'list_jobs filters on paused');
SELECT is(conveyor.retry_now((SELECT id FROM fx WHERE name = 'other')), 'paused', 'retry_now of a paused job says paused');
SELECT is(conveyor.reschedule_job((SELECT id FROM fx WHERE name = 'later'), now() + interval '2 hours'), 'scheduled',
  'reschedule_job of a job no pause matches says scheduled, as before');

-- conveyor_admin runs flow control -----------------------------------------------------
SET ROLE conveyor_admin;
SELECT is(conveyor.pause(queue => 'tap_ff'), true, 'conveyor_admin may pause');
SELECT is(conveyor.resume(queue => 'tap_ff'), true, 'conveyor_admin may resume');
SELECT lives_ok($$SELECT conveyor.set_concurrency_limit('tap-ff-key', perform_limit => 2)$$, 'conveyor_admin may set a concurrency limit');
SELECT is((SELECT perform_limit FROM conveyor.concurrency_limits WHERE key = 'tap-ff-key'), 2, 'conveyor_admin may read conveyor.concurrency_limits');
SELECT is(conveyor.delete_concurrency_limit('tap-ff-key'), true, 'conveyor_admin may delete a concurrency limit');
-- 'other' is skipped: retry_now above holds its lock until this transaction ends (running).
SELECT is(conveyor.discard_jobs_where(state => 'paused', queue => 'tap_ff_other'), 1::bigint,
  'discard_jobs_where takes state paused');
SELECT is((SELECT expired_at IS NOT NULL FROM conveyor.jobs WHERE id = (SELECT id FROM fx WHERE name = 'red')), true,
  'discard_jobs_where expired the paused job');
RESET ROLE;
SELECT ok(NOT has_function_privilege('conveyor_worker', 'conveyor.pause(text, text, text)', 'EXECUTE')
          AND NOT has_function_privilege('conveyor_enqueuer', 'conveyor.set_concurrency_limit(text, integer, integer, integer, interval)', 'EXECUTE')
          AND NOT has_table_privilege('conveyor_admin', 'conveyor.pauses', 'UPDATE'),
  'workers and enqueuers still may not pause or set limits; admins do not UPDATE pauses');

SELECT * FROM finish();
ROLLBACK;
