-- Flow control: pause/resume, set_concurrency_limit/delete_concurrency_limit, and how
-- lock_jobs, lock_jobs_by_id and enqueue obey them (one session; the races are
-- in tests/python/test_flow_limits.py).
BEGIN;
SELECT plan(41);

CREATE TEMP TABLE fx AS
  SELECT 'a1' AS name, (conveyor.enqueue('tap.fc.A', queue => 'tap_fc', priority => 1)).id UNION ALL
  SELECT 'b1', (conveyor.enqueue('tap.fc.B', queue => 'tap_fc', priority => 2)).id UNION ALL
  SELECT 'l1', (conveyor.enqueue('tap.fc.A', queue => 'tap_fc', priority => 3, labels => ARRAY['tap-red', 'x'])).id UNION ALL
  SELECT 'o1', (conveyor.enqueue('tap.fc.A', queue => 'tap_fc_other', priority => 4)).id;

CREATE FUNCTION pg_temp.locked_names(queues text[], max_jobs integer DEFAULT 10) RETURNS text[]
LANGUAGE sql AS $$
  SELECT coalesce(array_agg(f.name ORDER BY f.name), '{}')
    FROM conveyor.lock_jobs(queues, max_jobs) AS j JOIN fx AS f ON f.id = j.id
$$;
CREATE FUNCTION pg_temp.release_all() RETURNS void LANGUAGE sql AS $$ SELECT pg_advisory_unlock_all() $$;

-- pause / resume ---------------------------------------------------------------
SELECT is(conveyor.pause(queue => 'tap_fc'), true, 'pause(queue) pauses a queue: true');
SELECT is(conveyor.pause(queue => 'tap_fc'), false, 'pausing it again is false (one row)');
SELECT results_eq($$SELECT queue, job_class, label FROM conveyor.pauses$$, $$VALUES ('tap_fc', NULL::text, NULL::text)$$,
  'conveyor.pauses lists the pause');
SELECT is(pg_temp.locked_names(ARRAY['tap_fc', 'tap_fc_other']), ARRAY['o1'], 'lock_jobs locks no job of a paused queue');
SELECT pg_temp.release_all();
SELECT is((SELECT count(*) FROM conveyor.lock_jobs_by_id(ARRAY(SELECT id FROM fx), ARRAY['tap_fc'])), 0::bigint,
  'lock_jobs_by_id locks no job of a paused queue');
SELECT is(conveyor.resume(queue => 'tap_fc'), true, 'resume(queue) removes the pause: true');
SELECT is(conveyor.resume(queue => 'tap_fc'), false, 'resuming what is not paused is false');
SELECT is(pg_temp.locked_names(ARRAY['tap_fc']), ARRAY['a1', 'b1', 'l1'], 'after resume the queue''s jobs are locked');
SELECT pg_temp.release_all();

SELECT ok(conveyor.pause(job_class => 'tap.fc.A'), 'pause(job_class)');
SELECT is(pg_temp.locked_names(ARRAY['tap_fc', 'tap_fc_other']), ARRAY['b1'], 'a paused class is skipped in every queue; jobs behind it are locked');
SELECT pg_temp.release_all();
SELECT ok(conveyor.resume(job_class => 'tap.fc.A'), 'resume(job_class)');

SELECT ok(conveyor.pause(label => 'tap-red'), 'pause(label)');
SELECT is(pg_temp.locked_names(ARRAY['tap_fc']), ARRAY['a1', 'b1'], 'a job carrying a paused label is skipped');
SELECT pg_temp.release_all();
SELECT is((SELECT array_agg(f.name) FROM conveyor.lock_jobs_by_id(ARRAY(SELECT id FROM fx), ARRAY['tap_fc']) AS j JOIN fx AS f ON f.id = j.id),
  ARRAY['a1', 'b1'], 'lock_jobs_by_id skips it too');
SELECT pg_temp.release_all();
SELECT ok(conveyor.pause(queue => 'tap_fc_other', job_class => 'tap.fc.A'), 'pause(queue, job_class): both must match');
SELECT is(pg_temp.locked_names(ARRAY['tap_fc', 'tap_fc_other']), ARRAY['a1', 'b1'], 'the class is paused in that queue only');
SELECT pg_temp.release_all();
SELECT ok(conveyor.resume(label => 'tap-red') AND conveyor.resume(queue => 'tap_fc_other', job_class => 'tap.fc.A'), 'resume both');

SELECT throws_ok($$SELECT conveyor.pause()$$, '22023', 'conveyor.pause: name a queue, a job_class or a label', 'pause() without a name raises 22023');
SELECT throws_ok($$SELECT conveyor.resume(queue => '')$$, '22023', 'conveyor.resume: queue, job_class and label must not be empty', 'an empty name raises 22023');
SELECT throws_ok($$SELECT conveyor.pause(label => repeat('l', 101))$$, '23514', NULL, 'a label over 100 characters breaks pauses_label_length');

-- perform_limit ------------------------------------------------------------------
SELECT lives_ok($$SELECT conveyor.set_concurrency_limit('tap.k', perform_limit => 2)$$, 'set_concurrency_limit(key, perform_limit)');
INSERT INTO fx SELECT 'k' || i, (conveyor.enqueue('tap.fc.K', queue => 'tap_fck', priority => i, concurrency_key => 'tap.k')).id FROM generate_series(1, 4) AS i;
INSERT INTO fx SELECT 'z9', (conveyor.enqueue('tap.fc.Z', queue => 'tap_fck', priority => 9)).id;
SELECT is(pg_temp.locked_names(ARRAY['tap_fck']), ARRAY['k1', 'k2', 'z9'], 'at most perform_limit jobs of the key are locked; the job behind them is not blocked');
SELECT is(pg_temp.locked_names(ARRAY['tap_fck']), '{}'::text[], 'a second call locks none: the key is full while this session holds two');
-- (A released job's lock is kept by the transaction until it ends, so the freed
-- slot is tested across transactions, in tests/python/test_flow_limits.py.)
SELECT lives_ok($$SELECT conveyor.set_concurrency_limit('tap.j', perform_limit => 2)$$, 'another key, limit 2');
INSERT INTO fx SELECT 'j' || i, (conveyor.enqueue('tap.fc.J', queue => 'tap_fcj', priority => i, concurrency_key => 'tap.j')).id FROM generate_series(1, 3) AS i;
SELECT is((SELECT array_agg(f.name ORDER BY f.name) FROM conveyor.lock_jobs_by_id(ARRAY(SELECT id FROM fx WHERE name LIKE 'j%'), ARRAY['tap_fcj']) AS j JOIN fx AS f ON f.id = j.id),
  ARRAY['j1', 'j2'], 'lock_jobs_by_id obeys the limit too, most urgent first');
SELECT lives_ok($$SELECT conveyor.set_concurrency_limit('tap.p*', perform_limit => 1)$$, 'a prefix limit');
INSERT INTO fx SELECT 'p' || i, (conveyor.enqueue('tap.fc.P', queue => 'tap_fcp', priority => i, concurrency_key => 'tap.p.one')).id FROM generate_series(1, 2) AS i;
INSERT INTO fx SELECT 'q1', (conveyor.enqueue('tap.fc.P', queue => 'tap_fcp', priority => 5, concurrency_key => 'tap.p.two')).id;
SELECT is(pg_temp.locked_names(ARRAY['tap_fcp']), ARRAY['p1', 'q1'], 'a prefix* limit applies to each key it starts, separately');
SELECT lives_ok($$SELECT conveyor.set_concurrency_limit('tap.p.three', perform_limit => 2)$$, 'an exact key under the prefix');
INSERT INTO fx SELECT 'r' || i, (conveyor.enqueue('tap.fc.R', queue => 'tap_fcr', priority => i, concurrency_key => 'tap.p.three')).id FROM generate_series(1, 3) AS i;
SELECT is(pg_temp.locked_names(ARRAY['tap_fcr']), ARRAY['r1', 'r2'], 'the exact key wins over the prefix');
SELECT is(conveyor.delete_concurrency_limit('tap.p.three'), true, 'delete_concurrency_limit: true when the key had limits');
SELECT is(conveyor.delete_concurrency_limit('tap.p.three'), false, 'deleting again is false');
SELECT is((SELECT count(*) FROM conveyor.concurrency_limits WHERE key IN ('tap.k', 'tap.j', 'tap.p*')), 3::bigint,
  'conveyor.concurrency_limits lists the others');

-- enqueue_limit ---------------------------------------------------------------------
SELECT lives_ok($$SELECT conveyor.set_concurrency_limit('tap.e', enqueue_limit => 2)$$, 'set_concurrency_limit(key, enqueue_limit)');
SELECT is(ARRAY(SELECT (conveyor.enqueue('tap.fc.E', queue => 'tap_fce', concurrency_key => 'tap.e')).id IS NOT NULL FROM generate_series(1, 3)),
  ARRAY[true, true, false], 'the enqueue beyond enqueue_limit inserts nothing and returns NULL');
SELECT is((SELECT count(*) FROM conveyor.lock_jobs(ARRAY['tap_fce'], 1)), 1::bigint, 'one of them is locked (running)');
SELECT ok((conveyor.enqueue('tap.fc.E', queue => 'tap_fce', concurrency_key => 'tap.e')).id IS NOT NULL,
  'a running job does not count: one more may wait');
SELECT throws_ok($$SELECT conveyor.enqueue_many('[{"job_class": "tap.fc.E", "concurrency_key": "tap.e"}]')$$, '0A000',
  'conveyor.enqueue_many: a job''s concurrency_key has an enqueue_limit', 'enqueue_many refuses a key with an enqueue_limit');

-- errors and privileges ---------------------------------------------------------------
SELECT throws_ok($$SELECT conveyor.set_concurrency_limit('tap.x')$$, '22023', 'conveyor.set_concurrency_limit: give perform_limit, enqueue_limit or perform_throttle', 'no limit given raises 22023');
SELECT throws_ok($$SELECT conveyor.set_concurrency_limit('tap.x', -1)$$, '22023', 'conveyor.set_concurrency_limit: limits must not be negative', 'a negative limit raises 22023');
SELECT throws_ok($$SELECT conveyor.set_concurrency_limit(NULL, 1)$$, '22004', 'conveyor.set_concurrency_limit: key must not be NULL', 'a NULL key raises 22004');
SELECT ok(NOT has_function_privilege('conveyor_worker', 'conveyor.pause(text, text, text)', 'EXECUTE')
          AND NOT has_function_privilege('conveyor_enqueuer', 'conveyor.set_concurrency_limit(text, integer, integer, integer, interval)', 'EXECUTE')
          AND has_table_privilege('conveyor_worker', 'conveyor.pauses', 'SELECT')
          AND NOT has_table_privilege('conveyor_worker', 'conveyor.pauses', 'INSERT'),
  'pause, resume and the limits are the owner''s; workers read them');

SELECT * FROM finish();
ROLLBACK;
