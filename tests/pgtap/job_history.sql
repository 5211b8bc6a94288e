-- Job history (issue 14): the columns, jobs_view's states, list_jobs,
-- finish_job(s) with results, retry_job's error history, retry_now,
-- discard_job, reschedule_job, the *_where bulk forms, cleanup, and who may
-- call them. "running" comes from locks this session takes; a lock another
-- session holds (55006) is tested in tests/python/test_job_history_sql.py.
BEGIN;
SELECT plan(83);

-- Fixture: one job per state, in their own queue.
CREATE TEMP TABLE fx (name text PRIMARY KEY, id bigint NOT NULL);
INSERT INTO fx SELECT n, id FROM unnest(ARRAY['ready', 'running', 'scheduled', 'retrying', 'finished', 'expired', 'old_finished', 'old_expired'])
  WITH ORDINALITY AS u(n, o),
  LATERAL conveyor.enqueue('tap.hist.Job', jsonb_build_array(n), queue => 'tap_hist', run_at => now() - interval '1 minute');
UPDATE conveyor.jobs SET run_at = now() + interval '1 hour' WHERE id IN (SELECT id FROM fx WHERE name IN ('scheduled', 'retrying'));
UPDATE conveyor.jobs SET error_count = 2, last_error_message = 'Boom: mailer down' WHERE id = (SELECT id FROM fx WHERE name = 'retrying');
UPDATE conveyor.jobs SET finished_at = now() WHERE id = (SELECT id FROM fx WHERE name = 'finished');
UPDATE conveyor.jobs SET expired_at = now(), last_error_message = 'Gave up' WHERE id = (SELECT id FROM fx WHERE name = 'expired');
UPDATE conveyor.jobs SET finished_at = now() - interval '20 days' WHERE id = (SELECT id FROM fx WHERE name = 'old_finished');
UPDATE conveyor.jobs SET expired_at = now() - interval '20 days' WHERE id = (SELECT id FROM fx WHERE name = 'old_expired');
SELECT is((SELECT count(*) FROM conveyor.lock_jobs_by_id(ARRAY(SELECT id FROM fx WHERE name = 'running'), queues => ARRAY['tap_hist'])),
  1::bigint, 'fixture: the running job is locked by this session');
SELECT id AS ready FROM fx WHERE name = 'ready' \gset
SELECT id AS running FROM fx WHERE name = 'running' \gset
SELECT id AS scheduled FROM fx WHERE name = 'scheduled' \gset
SELECT id AS retrying FROM fx WHERE name = 'retrying' \gset
SELECT id AS finished FROM fx WHERE name = 'finished' \gset
SELECT id AS expired FROM fx WHERE name = 'expired' \gset

-- Columns ----------------------------------------------------------------------
SELECT is((SELECT (result, errors, attempted_at, attempted_by)::text FROM conveyor.jobs WHERE id = :ready),
  '(,[],,)', 'a new job has no result, an empty error history and no attempt');

-- jobs_view: the one state definition ------------------------------------------
SELECT results_eq(
  $$SELECT f.name, v.state FROM fx AS f JOIN conveyor.jobs_view AS v USING (id) ORDER BY f.id$$,
  $$VALUES ('ready', 'ready'), ('running', 'running'), ('scheduled', 'scheduled'), ('retrying', 'retrying'),
           ('finished', 'finished'), ('expired', 'expired'), ('old_finished', 'finished'), ('old_expired', 'expired')$$,
  'jobs_view gives each fixture job its state');
SELECT is((SELECT locked_by FROM conveyor.jobs_view WHERE id = :running), pg_catalog.pg_backend_pid(),
  'locked_by is the pid of the session holding the lock');
SELECT is((SELECT count(*) FROM conveyor.jobs_view WHERE locked_by IS NOT NULL AND id IN (SELECT id FROM fx)), 1::bigint,
  'only the locked job has a locked_by');
SELECT is((SELECT count(*) FROM conveyor.jobs_view), (SELECT count(*) FROM conveyor.jobs),
  'jobs_view has one row per job (a job held twice is not doubled)');
SELECT is(conveyor.job_state(NULL, NULL, true, now() + interval '1 day', 3, now()), 'running',
  'job_state: a locked job is running whatever its run_at');
SELECT is(conveyor.job_state(now(), now(), true, now(), 0, now()), 'finished',
  'job_state: finished wins over everything');

-- stats count from the same states
SELECT results_eq(
  $$SELECT ready, scheduled, working, errored, expired, finished FROM conveyor.queue_stats() WHERE queue = 'tap_hist'$$,
  $$SELECT count(*) FILTER (WHERE state = 'ready'), count(*) FILTER (WHERE state IN ('scheduled', 'retrying')),
           count(*) FILTER (WHERE state = 'running'), count(*) FILTER (WHERE state NOT IN ('finished', 'expired') AND error_count > 0),
           count(*) FILTER (WHERE state = 'expired'), count(*) FILTER (WHERE state = 'finished')
      FROM conveyor.jobs_view WHERE queue = 'tap_hist'$$,
  'queue_stats counts what jobs_view says');
SELECT results_eq(
  $$SELECT count, count_working, count_errored FROM conveyor.job_stats() WHERE job_class = 'tap.hist.Job'$$,
  $$VALUES (4::bigint, 1::bigint, 1::bigint)$$,
  'job_stats counts the unresolved jobs, the running one as working');

-- list_jobs ---------------------------------------------------------------------
SELECT results_eq(
  $$SELECT id FROM conveyor.list_jobs(queue => 'tap_hist')$$,
  $$SELECT id FROM fx ORDER BY id DESC$$,
  'list_jobs lists newest first');
SELECT results_eq(
  $$SELECT id FROM conveyor.list_jobs(queue => 'tap_hist', max_rows => 3)$$,
  $$SELECT id FROM fx ORDER BY id DESC LIMIT 3$$,
  'list_jobs stops at max_rows');
SELECT results_eq(
  $$SELECT id FROM conveyor.list_jobs(queue => 'tap_hist', max_rows => 3,
                                      before_id => (SELECT min(id) FROM (SELECT id FROM fx ORDER BY id DESC LIMIT 3) AS p))$$,
  $$SELECT id FROM fx ORDER BY id DESC OFFSET 3 LIMIT 3$$,
  'list_jobs before_id gives the next page (keyset)');
SELECT results_eq($$SELECT id FROM conveyor.list_jobs(state => 'retrying', queue => 'tap_hist')$$, ARRAY[:retrying::bigint],
  'list_jobs filters by state');
SELECT results_eq($$SELECT id FROM conveyor.list_jobs(state => 'running', job_class => 'tap.hist.Job')$$, ARRAY[:running::bigint],
  'list_jobs filters by state running and job_class');
SELECT results_eq($$SELECT id FROM conveyor.list_jobs(search => 'MAILER', queue => 'tap_hist')$$, ARRAY[:retrying::bigint],
  'list_jobs search is a case-insensitive substring of last_error_message');
SELECT results_eq($$SELECT id FROM conveyor.list_jobs(search => '"old_expired"', queue => 'tap_hist')$$,
  $$SELECT id FROM fx WHERE name = 'old_expired'$$,
  'list_jobs search looks in args');
SELECT is((SELECT count(*) FROM conveyor.list_jobs(search => '%', queue => 'tap_hist')), 0::bigint,
  'list_jobs search is a substring, not a LIKE pattern (% matches only a %)');
SELECT is((SELECT count(*) FROM conveyor.list_jobs(state => 'no such state')), 0::bigint,
  'list_jobs with an unknown state matches nothing');
SELECT throws_ok($$SELECT * FROM conveyor.list_jobs(max_rows => 0)$$, '22023',
  'conveyor.list_jobs: max_rows must be 1 to 10000, not 0', 'list_jobs rejects max_rows 0 with 22023');

-- finish_job(s) with a result ------------------------------------------------------
SELECT ok(conveyor.finish_job(:ready, '{"sent": 3}'), 'finish_job with a result finishes the job');
SELECT is((SELECT result FROM conveyor.jobs WHERE id = :ready), '{"sent": 3}'::jsonb, 'finish_job stores the result');
SELECT ok(NOT conveyor.finish_job(:ready, '1'), 'finish_job of a finished job is false');
SELECT is((SELECT result FROM conveyor.jobs WHERE id = :ready), '{"sent": 3}'::jsonb, 'a second finish changes nothing');

CREATE TEMP TABLE fin AS SELECT id FROM generate_series(1, 3) AS g,
  LATERAL conveyor.enqueue('tap.hist.Fin', jsonb_build_array(g), queue => 'tap_hist_fin');
SELECT set_eq(
  $$SELECT conveyor.finish_jobs(ARRAY(SELECT id FROM fin ORDER BY id), NULL, '[1, null, "x"]',
                                ARRAY['2026-01-01 00:00:00+00', NULL, '2026-01-02 00:00:00+00']::timestamptz[], 'host:42')$$,
  $$SELECT id FROM fin$$,
  'finish_jobs with results finishes each job');
SELECT is(
  (SELECT string_agg(format('%s|%s|%s', result, attempted_at AT TIME ZONE 'UTC', attempted_by), ' ' ORDER BY id)
     FROM conveyor.jobs WHERE id IN (SELECT id FROM fin)),
  '1|2026-01-01 00:00:00|host:42 ||host:42 "x"|2026-01-02 00:00:00|host:42',
  'finish_jobs stores the results by position (a JSON null as none), attempted_at and attempted_by');
SELECT throws_ok($$SELECT conveyor.finish_jobs(ARRAY[1, 2]::bigint[], NULL, '[1]')$$, '22023',
  'conveyor.finish_jobs: results must be a JSON array with one element per id (2 ids)',
  'finish_jobs rejects results of another length with 22023');
SELECT throws_ok(format($$SELECT conveyor.finish_job(%s, to_jsonb(repeat('x', 1048577)))$$, :retrying), '54000',
  format('conveyor.finish_jobs: the result of job %s is larger than 1048576 bytes of JSON', :retrying),
  'finish_job rejects a result over the limit with 54000');
SELECT is((SELECT state FROM conveyor.jobs_view WHERE id = :retrying), 'retrying', 'a refused result leaves the job as it was');

-- retry_job's error history ----------------------------------------------------------
CREATE TEMP TABLE err AS SELECT id FROM conveyor.enqueue('tap.hist.Err', queue => 'tap_hist_err', maximum_retry_count => 100);
SELECT id AS err FROM err \gset
SELECT is((SELECT count(*) FROM conveyor.retry_job(:err, 'first', 'trace 1', attempted_at => '2026-01-01 00:00:00+00', attempted_by => 'box:7')),
  1::bigint, 'retry_job with attempted_at and attempted_by');
SELECT results_eq(
  $$SELECT e->>'attempt', e->>'message', e->>'backtrace', e->>'worker', (e->>'started_at')::timestamptz, (e->>'at')::timestamptz
      FROM conveyor.jobs AS j, jsonb_array_elements(j.errors) AS e WHERE j.id IN (SELECT id FROM err)$$,
  $$VALUES ('1', 'first', 'trace 1', 'box:7', '2026-01-01 00:00:00+00'::timestamptz, now())$$,
  'the error joins the history with attempt, message, backtrace, worker, started_at and at');
SELECT results_eq(
  $$SELECT attempted_at, attempted_by, error_count FROM conveyor.jobs WHERE id IN (SELECT id FROM err)$$,
  $$VALUES ('2026-01-01 00:00:00+00'::timestamptz, 'box:7', 1)$$,
  'retry_job stores attempted_at and attempted_by on the job');
SELECT is((SELECT count(*) FROM generate_series(2, 12) AS g, LATERAL conveyor.retry_job(:err, 'error ' || g, delay => 0)), 11::bigint,
  'eleven more errors');
SELECT results_eq(
  $$SELECT jsonb_array_length(errors), errors->0->>'attempt', errors->-1->>'attempt', errors->-1->>'message', error_count, last_error_message
      FROM conveyor.jobs WHERE id IN (SELECT id FROM err)$$,
  $$VALUES (10, '3', '12', 'error 12', 12, 'error 12')$$,
  'the history keeps the newest 10 errors, oldest first; error_count counts all 12; last_error_message is the newest');
SELECT is(conveyor.job_limit('errors_kept'), 10, 'job_limit errors_kept is 10');
SELECT is(conveyor.job_limit('result'), 1048576, 'job_limit result is 1 MiB');
SELECT is(conveyor.errors_append('[]', '{"a": 1}'), '[{"a": 1}]'::jsonb, 'errors_append appends to an empty history');
SELECT is(jsonb_array_length(conveyor.errors_append((SELECT jsonb_agg(g) FROM generate_series(1, 15) AS g), '16')), 10,
  'errors_append cuts a longer history to the newest 10');
SELECT is((SELECT e->>'message' FROM conveyor.jobs AS j, jsonb_array_elements(j.errors) AS e
            WHERE j.id = :err ORDER BY (e->>'attempt')::int DESC LIMIT 1), 'error 12', 'the newest entry is last');
SELECT is((SELECT count(*) FROM conveyor.retry_job(:err, repeat('m', 2000), repeat('b', 20000), expire => true)), 1::bigint,
  'retry_job expire records the error too');
SELECT results_eq(
  $$SELECT length(errors->-1->>'message'), length(errors->-1->>'backtrace'), expired_at IS NOT NULL
      FROM conveyor.jobs WHERE id IN (SELECT id FROM err)$$,
  $$VALUES (1000, 10000, true)$$,
  'history entries are cut as last_error_message/backtrace are; the job is expired');

-- retry_now ------------------------------------------------------------------------
SELECT is(conveyor.retry_now(:expired), 'ready', 'retry_now makes an expired job ready');
SELECT results_eq($$SELECT expired_at, run_at = now(), last_error_message FROM conveyor.jobs WHERE id = $$ || :expired,
  $$VALUES (NULL::timestamptz, true, 'Gave up')$$, 'retry_now clears expired_at, sets run_at = now(), keeps the error');
SELECT is(conveyor.retry_now(:retrying), 'ready', 'retry_now makes a retrying job ready');
SELECT is((SELECT error_count FROM conveyor.jobs WHERE id = :retrying), 2, 'retry_now keeps error_count');
SELECT is(conveyor.retry_now(:scheduled), 'ready', 'retry_now makes a scheduled job ready');
SELECT throws_ok(format('SELECT conveyor.retry_now(%s)', :finished), '55000',
  format('conveyor.retry_now: job %s is finished', :finished), 'retry_now refuses a finished job with 55000');
SELECT throws_ok('SELECT conveyor.retry_now(-1)', 'P0002', 'conveyor.retry_now: no job with id -1',
  'retry_now of a missing job raises P0002');
CREATE TEMP TABLE uk AS SELECT id FROM conveyor.enqueue('tap.hist.Uk', queue => 'tap_hist_uk', unique_key => 'tap-hist-key');
UPDATE conveyor.jobs SET expired_at = now() WHERE id IN (SELECT id FROM uk);
SELECT is((SELECT count(*) FROM conveyor.enqueue('tap.hist.Uk', queue => 'tap_hist_uk', unique_key => 'tap-hist-key')), 1::bigint,
  'fixture: another unresolved job takes the key');
SELECT throws_ok(format('SELECT conveyor.retry_now(%s)', (SELECT id FROM uk)), '23505',
  format('conveyor.retry_now: job %s has unique_key tap-hist-key, which another unresolved job holds', (SELECT id FROM uk)),
  'retry_now of an expired job whose key another job holds raises 23505');

-- discard_job ----------------------------------------------------------------------
SELECT is(conveyor.discard_job(:scheduled, 'not needed'), 'expired', 'discard_job expires a job');
SELECT results_eq(
  $$SELECT expired_at = now(), last_error_message, errors->-1->>'message', errors->-1->>'operator' = session_user, error_count
      FROM conveyor.jobs WHERE id = $$ || :scheduled,
  $$VALUES (true, 'not needed', 'not needed', true, 0)$$,
  'discard_job records the reason as last_error_message and in the history, with the operator; error_count unchanged');
SELECT throws_ok(format('SELECT conveyor.discard_job(%s)', :scheduled), '55000',
  format('conveyor.discard_job: job %s is expired', :scheduled), 'discard_job refuses an expired job with 55000');
SELECT throws_ok(format('SELECT conveyor.discard_job(%s, NULL)', :retrying), '22004',
  'conveyor.discard_job: reason must not be NULL', 'discard_job refuses a NULL reason with 22004');
SELECT throws_ok('SELECT conveyor.discard_job(-1)', 'P0002', 'conveyor.discard_job: no job with id -1',
  'discard_job of a missing job raises P0002');

-- reschedule_job -----------------------------------------------------------------------
SELECT is(conveyor.reschedule_job(:retrying, now() + interval '1 day'), 'retrying', 'reschedule_job of an errored job to the future: retrying');
SELECT is((SELECT run_at FROM conveyor.jobs WHERE id = :retrying), now() + interval '1 day', 'reschedule_job sets run_at');
SELECT is(conveyor.reschedule_job(:retrying, now() - interval '1 day'), 'ready', 'reschedule_job to the past: ready');
SELECT throws_ok(format('SELECT conveyor.reschedule_job(%s, NULL)', :retrying), '22023',
  'conveyor.reschedule_job: run_at must be a finite time, not NULL', 'reschedule_job refuses a NULL run_at with 22023');
SELECT throws_ok(format('SELECT conveyor.reschedule_job(%s, now())', :finished), '55000',
  format('conveyor.reschedule_job: job %s is finished', :finished), 'reschedule_job refuses a finished job with 55000');

-- bulk ---------------------------------------------------------------------------------
CREATE TEMP TABLE bulk AS SELECT g, id FROM generate_series(1, 6) AS g,
  LATERAL conveyor.enqueue('tap.hist.Bulk' || (g % 2), jsonb_build_array(g), queue => 'tap_hist_bulk', run_at => now() + interval '1 hour');
UPDATE conveyor.jobs SET expired_at = now(), error_count = 1, last_error_message = CASE WHEN b.g <= 2 THEN 'SMTP timeout' ELSE 'other' END
  FROM bulk AS b WHERE jobs.id = b.id AND b.g <= 4;
SELECT is(conveyor.retry_jobs_where(state => 'expired', queue => 'tap_hist_bulk', error_like => '%smtp%'), 2::bigint,
  'retry_jobs_where retries the expired jobs whose error matches');
SELECT is((SELECT count(*) FROM conveyor.jobs_view WHERE queue = 'tap_hist_bulk' AND state = 'ready'), 2::bigint, 'they are ready');
SELECT is(conveyor.retry_jobs_where(queue => 'tap_hist_bulk', job_class => 'tap.hist.Bulk1'), 2::bigint,
  'retry_jobs_where without a state retries the expired, retrying and scheduled jobs of the class (not the ready one)');
SELECT pg_catalog.pg_advisory_lock(conveyor.job_lock_key1(id), conveyor.job_lock_key2(id)) IS NOT NULL AS taken
  FROM bulk WHERE g = 6 \gset
SELECT is(conveyor.discard_jobs_where(queue => 'tap_hist_bulk', reason => 'bulk'), 4::bigint,
  'discard_jobs_where discards every unresolved job of the queue but the running one');
SELECT is((SELECT state FROM conveyor.jobs_view WHERE id = (SELECT id FROM bulk WHERE g = 6)), 'running', 'the running job is untouched');
SELECT is((SELECT count(*) FROM conveyor.jobs WHERE queue = 'tap_hist_bulk' AND last_error_message = 'bulk' AND expired_at IS NOT NULL),
  4::bigint, 'with the reason');
SELECT throws_ok($$SELECT conveyor.retry_jobs_where(state => 'finished')$$, '22023',
  'conveyor.retry_jobs_where: state must be NULL or one of expired, retrying, scheduled, ready, paused, not finished',
  'retry_jobs_where refuses state finished with 22023');
SELECT throws_ok($$SELECT conveyor.discard_jobs_where(state => 'running')$$, '22023',
  'conveyor.discard_jobs_where: state must be NULL or one of ready, paused, retrying, scheduled, not running',
  'discard_jobs_where refuses state running with 22023');
SELECT is((SELECT state FROM conveyor.jobs_view WHERE id = :expired), 'running',
  'a job retry_now changed stays locked by the caller''s transaction until it commits (running meanwhile)');

-- cleanup ------------------------------------------------------------------------------
SELECT is(conveyor.cleanup(), 1::bigint, 'cleanup() deletes only the job finished 20 days ago');
SELECT is((SELECT count(*) FROM fx JOIN conveyor.jobs USING (id) WHERE fx.name = 'old_finished'), 0::bigint, 'the old finished job is gone');
SELECT is((SELECT count(*) FROM fx JOIN conveyor.jobs USING (id) WHERE fx.name = 'old_expired'), 1::bigint, 'expired jobs are kept by default');
SELECT is(conveyor.cleanup(NULL, '1 day'), 1::bigint, 'cleanup(NULL, ''1 day'') deletes the old expired job only');
CREATE TEMP TABLE many AS SELECT id FROM generate_series(1, 25) AS g, LATERAL conveyor.enqueue('tap.hist.Many', jsonb_build_array(g), queue => 'tap_hist_many');
UPDATE conveyor.jobs SET finished_at = now() - interval '30 days' WHERE id IN (SELECT id FROM many);
SELECT is(conveyor.cleanup(batch_size => 10, max_batches => 1), 10::bigint, 'max_batches 1 deletes one batch');
SELECT is(conveyor.cleanup(batch_size => 10), 15::bigint, 'cleanup goes on in batches until done');
SELECT set_eq($$SELECT id FROM conveyor.jobs WHERE queue = 'tap_hist' AND finished_at IS NULL AND expired_at IS NULL$$,
  ARRAY[:running, :retrying, :expired]::bigint[], 'unresolved jobs are never deleted (the three of tap_hist are there)');
SELECT is(conveyor.cleanup('0 seconds', '0 seconds'), (SELECT count(*) FROM conveyor.jobs WHERE finished_at < now() OR expired_at < now()),
  'cleanup(0, 0) deletes every job resolved before now');
SELECT throws_ok($$SELECT conveyor.cleanup(batch_size => 0)$$, '22023',
  'conveyor.cleanup: batch_size must be 1 to 100000, not 0', 'cleanup rejects batch_size 0 with 22023');
SELECT throws_ok($$SELECT conveyor.cleanup('-1 day')$$, '22023',
  'conveyor.cleanup: finished_before and expired_before must not be negative', 'cleanup rejects a negative interval with 22023');

-- privileges ------------------------------------------------------------------------------
SELECT is(
  ARRAY(SELECT f FROM unnest(ARRAY['conveyor.list_jobs(text, text, text, text, bigint, integer)', 'conveyor.retry_now(bigint)',
                                   'conveyor.discard_job(bigint, text)', 'conveyor.reschedule_job(bigint, timestamptz)',
                                   'conveyor.retry_jobs_where(text, text, text, text, timestamptz)',
                                   'conveyor.discard_jobs_where(text, text, text, text, timestamptz, text)',
                                   'conveyor.cleanup(interval, interval, integer, integer)']) AS f
         WHERE NOT pg_catalog.has_function_privilege('conveyor_admin', f, 'EXECUTE')),
  '{}'::text[], 'conveyor_admin may execute every management function');
SELECT is(
  ARRAY(SELECT f FROM unnest(ARRAY['conveyor.list_jobs(text, text, text, text, bigint, integer)', 'conveyor.retry_now(bigint)',
                                   'conveyor.discard_job(bigint, text)', 'conveyor.reschedule_job(bigint, timestamptz)',
                                   'conveyor.retry_jobs_where(text, text, text, text, timestamptz)',
                                   'conveyor.discard_jobs_where(text, text, text, text, timestamptz, text)',
                                   'conveyor.cleanup(interval, interval, integer, integer)',
                                   'conveyor.finish_job(bigint, jsonb)', 'conveyor.destroy_job(bigint)']) AS f
         WHERE pg_catalog.has_function_privilege('conveyor_enqueuer', f, 'EXECUTE')),
  '{}'::text[], 'conveyor_enqueuer may execute none of them');
SELECT is(
  ARRAY(SELECT f FROM unnest(ARRAY['conveyor.list_jobs(text, text, text, text, bigint, integer)', 'conveyor.retry_now(bigint)',
                                   'conveyor.discard_job(bigint, text)', 'conveyor.reschedule_job(bigint, timestamptz)',
                                   'conveyor.retry_jobs_where(text, text, text, text, timestamptz)',
                                   'conveyor.discard_jobs_where(text, text, text, text, timestamptz, text)']) AS f
         WHERE pg_catalog.has_function_privilege('conveyor_worker', f, 'EXECUTE')),
  '{}'::text[], 'conveyor_worker may execute no management function (cleanup only)');
SELECT ok(NOT pg_catalog.has_table_privilege('conveyor_enqueuer', 'conveyor.jobs_view', 'SELECT'),
  'conveyor_enqueuer may not read jobs_view');

SELECT * FROM finish();
ROLLBACK;
