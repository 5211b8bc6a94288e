-- Throttles: set_concurrency_limit's perform_throttle and throttle_period, the
-- constraints, and how lock_jobs and lock_jobs_by_id take and give back
-- starts (one session; the races, the wake-up notification and a real worker
-- are in tests/python/test_flow_throttle.py).
BEGIN;
SELECT plan(46);

CREATE TEMP TABLE fx (name text, id bigint);
CREATE FUNCTION pg_temp.enqueue(name text, queue text, priority integer, key text) RETURNS void
LANGUAGE sql AS $$
  INSERT INTO fx SELECT name, (conveyor.enqueue('tap.th.J', queue => queue, priority => priority, concurrency_key => key)).id
$$;
CREATE FUNCTION pg_temp.locked_names(queues text[], max_jobs integer DEFAULT 10) RETURNS text[]
LANGUAGE sql AS $$
  SELECT coalesce(array_agg(f.name ORDER BY f.name), '{}')
    FROM conveyor.lock_jobs(queues, max_jobs) AS j JOIN fx AS f ON f.id = j.id
$$;
CREATE FUNCTION pg_temp.starts(key text) RETURNS integer
LANGUAGE sql AS $$ SELECT coalesce((SELECT cardinality(t.starts) FROM conveyor.throttle_starts AS t WHERE t.key = starts.key), 0) $$;
CREATE FUNCTION pg_temp.release_all() RETURNS void LANGUAGE sql AS $$ SELECT pg_advisory_unlock_all() $$;

-- flow_in_use: a constant, true exactly while a pause or a limit exists ------------------
SELECT is(conveyor.flow_in_use(), false, 'flow_in_use() is false with nothing paused or limited');
-- (Each change in a statement of its own: a statement's plan folds the
-- constant when it is planned, before the change.)
SELECT conveyor.pause(queue => 'tap_th_nothing');
SELECT ok(conveyor.flow_in_use(), 'a pause makes it true');
SELECT conveyor.resume(queue => 'tap_th_nothing');
SELECT ok(NOT conveyor.flow_in_use(), 'resuming the last pause makes it false');
SELECT conveyor.set_concurrency_limit('tap.f', 1);
SELECT ok(conveyor.flow_in_use(), 'a limit makes it true');
SELECT conveyor.delete_concurrency_limit('tap.f');
SELECT ok(NOT conveyor.flow_in_use(), 'deleting the last limit makes it false');
INSERT INTO conveyor.pauses (queue) VALUES ('tap_th_direct');
SELECT ok(conveyor.flow_in_use(), 'so does a row written directly');
TRUNCATE conveyor.pauses;
SELECT ok(NOT conveyor.flow_in_use(), 'and TRUNCATE');
SELECT ok(pg_get_functiondef('conveyor.flow_in_use()'::regprocedure) LIKE '%IMMUTABLE%RETURN false%',
  'the value is the function''s constant body (lock_jobs'' plans fold it)');

-- the table and its constraints --------------------------------------------------------
SELECT has_column('conveyor', 'concurrency_limits', 'perform_throttle', 'concurrency_limits.perform_throttle exists');
SELECT col_type_is('conveyor', 'concurrency_limits', 'throttle_period', 'interval', 'concurrency_limits.throttle_period is an interval');
SELECT throws_ok($$INSERT INTO conveyor.concurrency_limits (key, perform_throttle) VALUES ('tap.c', 1)$$, '23514', NULL,
  'a throttle without its period breaks concurrency_limits_throttle_complete');
SELECT throws_ok($$INSERT INTO conveyor.concurrency_limits (key, perform_throttle, throttle_period) VALUES ('tap.c', 1001, '1 s')$$, '23514', NULL,
  'perform_throttle over 1000 breaks concurrency_limits_perform_throttle_in_range');
SELECT throws_ok($$INSERT INTO conveyor.concurrency_limits (key, perform_throttle, throttle_period) VALUES ('tap.c', 1, '-1 s')$$, '23514', NULL,
  'a negative period breaks concurrency_limits_throttle_period_positive');

-- set_concurrency_limit -------------------------------------------------------------------
SELECT lives_ok($$SELECT conveyor.set_concurrency_limit('tap.t', perform_throttle => 2, throttle_period => '1 hour')$$,
  'set_concurrency_limit(key, perform_throttle, throttle_period)');
SELECT results_eq($$SELECT perform_limit, enqueue_limit, perform_throttle, throttle_period FROM conveyor.concurrency_limits WHERE key = 'tap.t'$$,
  $$VALUES (NULL::integer, NULL::integer, 2, interval '1 hour')$$, 'the throttle is stored, without the other limits');
SELECT throws_ok($$SELECT conveyor.set_concurrency_limit('tap.x', perform_throttle => 2)$$, '22023',
  'conveyor.set_concurrency_limit: give perform_throttle and throttle_period together', 'a throttle without a period raises 22023');
SELECT throws_ok($$SELECT conveyor.set_concurrency_limit('tap.x', throttle_period => '1 s')$$, '22023',
  'conveyor.set_concurrency_limit: give perform_limit, enqueue_limit or perform_throttle', 'a period alone is no limit: 22023');
SELECT throws_ok($$SELECT conveyor.set_concurrency_limit('tap.x', perform_throttle => 0, throttle_period => '1 s')$$, '22023',
  'conveyor.set_concurrency_limit: perform_throttle must be between 1 and 1000, not 0', 'perform_throttle 0 raises 22023');
SELECT throws_ok($$SELECT conveyor.set_concurrency_limit('tap.x', perform_throttle => 1, throttle_period => '0 s')$$, '22023',
  'conveyor.set_concurrency_limit: throttle_period must be positive, not 00:00:00', 'a zero period raises 22023');
SELECT lives_ok($$SELECT conveyor.set_concurrency_limit('tap.x', 1, 2, 3, '1 minute')$$, 'all four limits, positionally');
SELECT results_eq($$SELECT perform_limit, enqueue_limit, perform_throttle, throttle_period FROM conveyor.concurrency_limits WHERE key = 'tap.x'$$,
  $$VALUES (1, 2, 3, interval '1 minute')$$, 'in the documented order: perform_limit, enqueue_limit, perform_throttle, throttle_period');
SELECT lives_ok($$SELECT conveyor.set_concurrency_limit('tap.x', perform_limit => 1)$$, 'setting a key again');
SELECT is((SELECT perform_throttle FROM conveyor.concurrency_limits WHERE key = 'tap.x'), NULL::integer, 'replaces its throttle too');

-- lock_jobs --------------------------------------------------------------------------------
SELECT pg_temp.enqueue('t' || i, 'tap_th', i, 'tap.t') FROM generate_series(1, 4) AS i;
SELECT pg_temp.enqueue('z9', 'tap_th', 9, NULL);
SELECT is(pg_temp.locked_names(ARRAY['tap_th']), ARRAY['t1', 't2', 'z9'],
  'at most perform_throttle jobs of the key are locked; the job behind them is not blocked');
SELECT is(pg_temp.starts('tap.t'), 2, 'each took a start (conveyor.throttle_starts)');
SELECT pg_temp.release_all();
SELECT is(pg_temp.locked_names(ARRAY['tap_th']), ARRAY['z9'],
  'released jobs do not give their starts back: the window stays full for its period');
SELECT pg_temp.release_all();
SELECT is((SELECT count(*) FROM conveyor.lock_jobs_by_id(ARRAY(SELECT id FROM fx WHERE name LIKE 't%'), ARRAY['tap_th'])), 0::bigint,
  'lock_jobs_by_id obeys the throttle too');

-- the window slides
SELECT lives_ok($$SELECT conveyor.set_concurrency_limit('tap.s', perform_throttle => 1, throttle_period => '200 milliseconds')$$, '1 per 200 ms');
SELECT pg_temp.enqueue('s' || i, 'tap_ths', i, 'tap.s') FROM generate_series(1, 3) AS i;
SELECT is(pg_temp.locked_names(ARRAY['tap_ths']), ARRAY['s1'], 'one start in the window');
SELECT is(pg_temp.locked_names(ARRAY['tap_ths']), '{}'::text[], 'none more within it');
SELECT pg_sleep(0.25);
SELECT is(pg_temp.locked_names(ARRAY['tap_ths']), ARRAY['s2'], 'the next once the period has passed');
SELECT ok((SELECT t.starts[1] > clock_timestamp() - interval '0.25 s' FROM conveyor.throttle_starts AS t WHERE t.key = 'tap.s')
          AND pg_temp.starts('tap.s') = 1,
  'throttle_starts keeps only the last perform_throttle starts');

-- a start of a job that is not handed out is given back
SELECT lives_ok($$SELECT conveyor.set_concurrency_limit('tap.g', perform_throttle => 1, throttle_period => '1 hour')$$, 'another key');
SELECT pg_temp.enqueue('a1', 'tap_tha', 1, NULL);
SELECT pg_temp.enqueue('g2', 'tap_thg', 2, 'tap.g');
SELECT is(pg_temp.locked_names(ARRAY['tap_tha', 'tap_thg'], 1), ARRAY['a1'],
  'two queues, one job wanted: the more urgent is kept, the throttled one released');
SELECT is(pg_temp.starts('tap.g'), 0, 'and the released job''s start is given back');
SELECT is(pg_temp.locked_names(ARRAY['tap_tha', 'tap_thg'], 1), ARRAY['g2'], 'so the throttled job is locked next');

-- prefix keys and perform_limit together
SELECT lives_ok($$SELECT conveyor.set_concurrency_limit('tap.p*', perform_throttle => 1, throttle_period => '1 hour')$$, 'a prefix throttle');
SELECT pg_temp.enqueue('p' || i, 'tap_thp', i, 'tap.p.one') FROM generate_series(1, 2) AS i;
SELECT pg_temp.enqueue('q3', 'tap_thp', 3, 'tap.p.two');
SELECT is(pg_temp.locked_names(ARRAY['tap_thp']), ARRAY['p1', 'q3'], 'a prefix* throttle applies to each key it starts, separately');
SELECT lives_ok($$SELECT conveyor.set_concurrency_limit('tap.l', perform_limit => 1, perform_throttle => 5, throttle_period => '1 hour')$$,
  'a perform_limit and a throttle on one key');
SELECT pg_temp.enqueue('l' || i, 'tap_thl', i, 'tap.l') FROM generate_series(1, 3) AS i;
SELECT is(pg_temp.locked_names(ARRAY['tap_thl']), ARRAY['l1'], 'the limit holds the others back');
SELECT is(pg_temp.starts('tap.l'), 1, 'and only the locked job took a start');

-- take_throttle_slot, called directly -------------------------------------------------------
SELECT ok((SELECT taken AND at <= clock_timestamp() FROM conveyor.take_throttle_slot('tap.direct', 1, '1 hour')),
  'take_throttle_slot takes a start in an empty window: (true, now)');
SELECT ok((SELECT NOT taken AND at BETWEEN clock_timestamp() + interval '59 minutes' AND clock_timestamp() + interval '1 hour'
             FROM conveyor.take_throttle_slot('tap.direct', 1, '1 hour')),
  'and refuses the next, saying when the window opens: (false, the start plus the period)');
SELECT conveyor.give_back_throttle_slot('tap.direct', (SELECT t.starts[1] FROM conveyor.throttle_starts AS t WHERE t.key = 'tap.direct'));
SELECT ok((SELECT taken FROM conveyor.take_throttle_slot('tap.direct', 1, '1 hour')),
  'a start given back frees its place in the window');

-- privileges ---------------------------------------------------------------------------------
SELECT ok(has_function_privilege('conveyor_worker', 'conveyor.take_throttle_slot(text, integer, interval)', 'EXECUTE')
          AND NOT has_table_privilege('conveyor_worker', 'conveyor.throttle_starts', 'UPDATE')
          AND NOT has_table_privilege('conveyor_worker', 'conveyor.throttle_starts', 'SELECT')
          AND NOT has_function_privilege('conveyor_worker', 'conveyor.set_concurrency_limit(text, integer, integer, integer, interval)', 'EXECUTE')
          AND NOT has_function_privilege('conveyor_enqueuer', 'conveyor.take_throttle_slot(text, integer, interval)', 'EXECUTE')
          AND NOT has_function_privilege('conveyor_admin', 'conveyor.take_throttle_slot(text, integer, interval)', 'EXECUTE')
          AND has_table_privilege('conveyor_admin', 'conveyor.throttle_starts', 'SELECT')
          AND NOT has_table_privilege('conveyor_admin', 'conveyor.throttle_starts', 'DELETE'),
  'workers take starts only through lock_jobs'' helpers; the throttle is set by the owner or conveyor_admin');
SET LOCAL ROLE conveyor_admin;
SELECT lives_ok($$SELECT conveyor.set_concurrency_limit('tap.admin', perform_throttle => 3, throttle_period => '1 s')$$,
  'conveyor_admin may set a throttle');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
