-- conveyor.register_locker(), conveyor.unregister_locker(), conveyor.prune_lockers()
BEGIN;
SELECT plan(29);

SELECT has_function('conveyor', 'register_locker', ARRAY['text[]', 'integer[]', 'text', 'integer', 'boolean'],
  'conveyor.register_locker(text[], integer[], text, integer, boolean) exists');
SELECT has_function('conveyor', 'unregister_locker', ARRAY[]::text[], 'conveyor.unregister_locker() exists');
SELECT has_function('conveyor', 'prune_lockers', ARRAY[]::text[], 'conveyor.prune_lockers() exists');

-- Start from a registry holding only live sessions' rows (stale rows another
-- run left behind would otherwise be counted below).
SELECT lives_ok($$SELECT conveyor.prune_lockers()$$, 'fixture: stale rows pruned');
SELECT lives_ok($$SELECT conveyor.unregister_locker()$$, 'fixture: this session not registered');

-- Register ----------------------------------------------------------------------

SELECT is(conveyor.register_locker('{tap_reg_a,tap_reg_b}', '{10,30,NULL}'),
  'conveyor_worker_' || pg_catalog.pg_backend_pid(),
  'register_locker returns the channel conveyor_worker_<backend pid>');

SELECT results_eq(
  $$SELECT queues, worker_priorities, max_priority, listening, hostname, process_id,
           backend_start, postmaster_start, started_at
      FROM conveyor.lockers WHERE pid = pg_catalog.pg_backend_pid()$$,
  $$SELECT '{tap_reg_a,tap_reg_b}'::text[], '{10,30,NULL}'::integer[], NULL::integer, true, NULL::text, NULL::integer,
           (SELECT backend_start FROM pg_catalog.pg_stat_activity WHERE pid = pg_catalog.pg_backend_pid()),
           pg_catalog.pg_postmaster_start_time(), now()$$,
  'the row: queues and priorities as given, max_priority NULL (a worker takes any priority), listening by default, this backend''s start times');

SELECT is(conveyor.register_locker('{tap_reg_c}', '{10,50,30}', 'host-1', 4242, false),
  'conveyor_worker_' || pg_catalog.pg_backend_pid(), 're-registering returns the same channel');

SELECT is((SELECT count(*) FROM conveyor.lockers WHERE pid = pg_catalog.pg_backend_pid()), 1::bigint,
  're-registering replaces the row: one row per session');

SELECT results_eq(
  $$SELECT queues, worker_priorities, max_priority, listening, hostname, process_id
      FROM conveyor.lockers WHERE pid = pg_catalog.pg_backend_pid()$$,
  $$VALUES ('{tap_reg_c}'::text[], '{10,50,30}'::integer[], 50, false, 'host-1'::text, 4242)$$,
  'the new registration''s values replace the old; max_priority is the largest ceiling (50)');

SELECT lives_ok($$SELECT conveyor.register_locker('{tap_reg_d}', '{7}')$$, 'fixture: registered with one worker');
SELECT is((SELECT max_priority FROM conveyor.lockers WHERE pid = pg_catalog.pg_backend_pid()), 7,
  'a single worker''s ceiling is max_priority');
SELECT lives_ok($$SELECT conveyor.register_locker('{tap_reg_d}', ARRAY[NULL]::integer[])$$, 'fixture: registered with one any-priority worker');
SELECT is((SELECT max_priority FROM conveyor.lockers WHERE pid = pg_catalog.pg_backend_pid()), NULL::integer,
  'a worker that takes any priority makes max_priority NULL');

-- Bad input -----------------------------------------------------------------------

SELECT throws_ok($$SELECT conveyor.register_locker(NULL, '{1}')$$, '22023',
  'conveyor.register_locker: queues must name at least one queue, without NULLs', 'NULL queues raises 22023');
SELECT throws_ok($$SELECT conveyor.register_locker('{}', '{1}')$$, '22023',
  'conveyor.register_locker: queues must name at least one queue, without NULLs', 'empty queues raises 22023');
SELECT throws_ok($$SELECT conveyor.register_locker('{tap_reg_a,NULL}', '{1}')$$, '22023',
  'conveyor.register_locker: queues must name at least one queue, without NULLs', 'a NULL queue raises 22023');
SELECT throws_ok($$SELECT conveyor.register_locker('{tap_reg_a}', NULL)$$, '22023',
  'conveyor.register_locker: worker_priorities must have one entry per worker (NULL = any priority)',
  'NULL worker_priorities raises 22023');
SELECT throws_ok($$SELECT conveyor.register_locker('{tap_reg_a}', '{}')$$, '22023',
  'conveyor.register_locker: worker_priorities must have one entry per worker (NULL = any priority)',
  'empty worker_priorities raises 22023');

-- Prune ------------------------------------------------------------------------------

INSERT INTO conveyor.lockers (pid, backend_start, queues, worker_priorities)
  VALUES (-1, now() - interval '1 day', '{tap_reg_gone}', '{NULL}'),   -- no such session
         (-2, NULL, '{tap_reg_gone}', '{NULL}');                        -- no such session, start unknown

SELECT is(conveyor.prune_lockers(), 2, 'prune_lockers deletes rows of sessions that are gone and returns how many');
SELECT results_eq($$SELECT pid FROM conveyor.lockers WHERE pid IN (-1, -2, pg_catalog.pg_backend_pid())$$,
  $$SELECT pg_catalog.pg_backend_pid()$$,
  'the live session''s row is kept');

UPDATE conveyor.lockers SET postmaster_start = pg_catalog.pg_postmaster_start_time() - interval '1 day'
 WHERE pid = pg_catalog.pg_backend_pid();
SELECT is(conveyor.prune_lockers(), 1, 'a row from before a server restart is pruned, even though its pid is alive');

SELECT lives_ok($$SELECT conveyor.register_locker('{tap_reg_a}', '{1}')$$, 'fixture: registered again');
UPDATE conveyor.lockers SET backend_start = backend_start - interval '1 second' WHERE pid = pg_catalog.pg_backend_pid();
SELECT is(conveyor.prune_lockers(), 1, 'a row whose pid now belongs to a later session (pid reuse) is pruned');

INSERT INTO conveyor.lockers (pid, backend_start, queues, worker_priorities) VALUES (-3, NULL, '{tap_reg_gone}', '{NULL}');
SELECT lives_ok($$SELECT conveyor.register_locker('{tap_reg_a}', '{1}')$$, 'registering while a stale row is present');
SELECT is((SELECT count(*) FROM conveyor.lockers WHERE pid = -3), 0::bigint, 'registering prunes stale rows');

-- Unregister ---------------------------------------------------------------------------

SELECT is(conveyor.unregister_locker(), true, 'unregister_locker returns true when the session was registered');
SELECT is((SELECT count(*) FROM conveyor.lockers WHERE pid = pg_catalog.pg_backend_pid()), 0::bigint,
  'unregister_locker removes the session''s row');
SELECT is(conveyor.unregister_locker(), false, 'unregister_locker returns false when the session was not registered');

SELECT * FROM finish();
ROLLBACK;
