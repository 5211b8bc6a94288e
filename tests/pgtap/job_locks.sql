-- The internal lock helpers: held_job_ids(), working_job_ids(),
-- release_job_locks(ids, held), recheck_locked_jobs(ids), and the two-key
-- advisory-lock encoding of job ids (key1 = 1129270870 # (id >> 32),
-- key2 = low 32 bits) used by every locking function.
BEGIN;
SELECT plan(33);

SELECT has_function('conveyor', 'held_job_ids', ARRAY[]::text[], 'conveyor.held_job_ids() exists');
SELECT has_function('conveyor', 'working_job_ids', ARRAY[]::text[], 'conveyor.working_job_ids() exists');
SELECT has_function('conveyor', 'release_job_locks', ARRAY['bigint[]', 'bigint[]'], 'conveyor.release_job_locks(bigint[], bigint[]) exists');
SELECT has_function('conveyor', 'recheck_locked_jobs', ARRAY['bigint[]', 'integer'], 'conveyor.recheck_locked_jobs(bigint[], integer) exists');

SELECT is(conveyor.held_job_ids(), '{}'::bigint[], 'a new session holds no job');

-- The key helpers: the one place the encoding is written, inlined by the
-- planner so the hot path pays nothing for calling them.
CREATE FUNCTION pg_temp.plan_of(query text) RETURNS text LANGUAGE plpgsql AS $f$
DECLARE v_line text; v_plan text := '';
BEGIN
  FOR v_line IN EXECUTE 'EXPLAIN (VERBOSE, COSTS OFF) ' || query LOOP v_plan := v_plan || v_line || E'\n'; END LOOP;
  RETURN v_plan;
END
$f$;
SELECT is(ARRAY[conveyor.job_lock_key1(42), conveyor.job_lock_key2(42), conveyor.job_lock_key1((1::bigint << 32) | 4294967295), conveyor.job_lock_key2((1::bigint << 32) | 4294967295)],
  ARRAY[1129270870, 42, 1129270870 # 1, -1],
  'job_lock_key1 is 1129270870 # the high 32 bits, job_lock_key2 the low 32 bits as a signed integer');
SELECT is(ARRAY(SELECT conveyor.job_lock_id((conveyor.job_lock_key1(i)::bigint & 4294967295)::oid, (conveyor.job_lock_key2(i)::bigint & 4294967295)::oid)
                  FROM unnest(ARRAY[1, 42, 2147483648, 4294967295, 4294967296, 72057594037927935]::bigint[]) AS i),
  ARRAY[1, 42, 2147483648, 4294967295, 4294967296, 72057594037927935]::bigint[],
  'job_lock_id decodes what job_lock_key1/job_lock_key2 encode, up to 2^56 - 1');
SELECT is(conveyor.job_lock_id(1129270870 # 16777216, 0), NULL, 'job_lock_id is NULL for a first key that is not a job''s');
SELECT is(ARRAY[conveyor.sorted_array_contains('{1,5,9}', 1), conveyor.sorted_array_contains('{1,5,9}', 9),
                conveyor.sorted_array_contains('{1,5,9}', 0), conveyor.sorted_array_contains('{1,5,9}', 6),
                conveyor.sorted_array_contains('{1,5,9}', 10), conveyor.sorted_array_contains('{}', 1),
                conveyor.sorted_array_contains('{1,5,9}', NULL)],
  ARRAY[true, true, false, false, false, false, false],
  'sorted_array_contains finds the first and last elements, and nothing before, between, after, in an empty array or for NULL');
SELECT doesnt_match(pg_temp.plan_of($q$SELECT conveyor.job_lock_key1(x), conveyor.job_lock_key2(x), conveyor.sorted_array_contains('{1}', x) FROM (VALUES (1::bigint)) AS v(x)$q$),
  'conveyor\.', 'job_lock_key1, job_lock_key2 and sorted_array_contains are inlined: the plan calls no conveyor function');
SELECT doesnt_match(pg_temp.plan_of($q$SELECT conveyor.job_lock_id(l.classid, l.objid) FROM pg_catalog.pg_locks AS l$q$),
  'job_lock_id', 'job_lock_id is inlined');

-- Key encoding, with locks taken by hand.
SELECT pg_catalog.pg_advisory_lock(1129270870, 42) IS NULL AS l1,
       pg_catalog.pg_advisory_lock(1129270870, -1) IS NULL AS l2,
       pg_catalog.pg_advisory_lock(1129270870 # 1, 0) IS NULL AS l3,
       pg_catalog.pg_advisory_lock(1129270870 # 2, -2147483648) IS NULL AS l4,
       pg_catalog.pg_advisory_lock(42::bigint) IS NULL AS foreign_1,
       pg_catalog.pg_advisory_lock(1, 2) IS NULL AS foreign_2
\gset

SELECT set_eq($$SELECT unnest(conveyor.held_job_ids())$$,
  ARRAY[42, 4294967295, 4294967296, 10737418240]::bigint[],
  'held_job_ids decodes conveyor''s two-key locks (low word as unsigned, high word XOR 1129270870) and ignores others');
SELECT ok(ARRAY(SELECT conveyor.working_job_ids()) @> ARRAY[42, 4294967295, 4294967296, 10737418240]::bigint[],
  'working_job_ids includes the jobs this session holds');
SELECT ok(NOT ARRAY(SELECT conveyor.working_job_ids()) && ARRAY[((1::bigint # 1129270870) << 32) | 2]::bigint[],
  'working_job_ids ignores a two-key lock in another application''s key space');

-- release_job_locks
SAVEPOINT release;
SELECT ARRAY(SELECT conveyor.release_job_locks(ARRAY[42, 4294967296, 4294967296, 999]::bigint[]) ORDER BY 1) AS released \gset
ROLLBACK TO SAVEPOINT release;

SELECT is(:'released'::bigint[], ARRAY[42, 4294967296]::bigint[],
  'release_job_locks returns the held ids it released, once each, ignoring ids not held');
SELECT set_eq($$SELECT unnest(conveyor.held_job_ids())$$,
  ARRAY[4294967295, 10737418240]::bigint[],
  'once the transaction is over the released jobs are no longer held, the others are');
SELECT is((SELECT count(*) FROM pg_catalog.pg_locks
            WHERE locktype = 'advisory' AND pid = pg_catalog.pg_backend_pid() AND objsubid = 1 AND objid = 42),
  1::bigint, 'a foreign single-key lock on 42 is never touched');

-- release_job_locks with held: ids in both lists only, no pg_locks read.
SAVEPOINT release_held;
SELECT ARRAY(SELECT conveyor.release_job_locks(ARRAY[4294967295, 10737418240]::bigint[],
                                               held => ARRAY[4294967295, 999]::bigint[]) ORDER BY 1) AS released_held \gset
ROLLBACK TO SAVEPOINT release_held;
SELECT is(:'released_held'::bigint[], ARRAY[4294967295]::bigint[],
  'with held, release_job_locks releases only ids both asked for and named in held');
SELECT set_eq($$SELECT unnest(conveyor.held_job_ids())$$, ARRAY[10737418240]::bigint[],
  'the held job not named in held keeps its lock');
SAVEPOINT wrong_claim;
SELECT is(ARRAY(SELECT conveyor.release_job_locks(ARRAY[999]::bigint[], held => ARRAY[999]::bigint[])), '{}'::bigint[],
  'a wrong claim about a job nobody holds releases nothing and raises nothing');
ROLLBACK TO SAVEPOINT wrong_claim;
SELECT pg_catalog.pg_advisory_lock(1129270870, 7) IS NULL AS l7 \gset
SELECT is(ARRAY(SELECT conveyor.destroy_jobs(ARRAY[7]::bigint[], held => ARRAY[]::bigint[])), '{}'::bigint[],
  'fixture: destroy_jobs of a job that does not exist, passing an empty held');
SELECT set_eq($$SELECT unnest(conveyor.held_job_ids())$$, ARRAY[7, 10737418240]::bigint[],
  'the resolution functions pass held on: with an empty held no lock is released');

-- Jobs with ids beyond 32 bits, through the public functions.
INSERT INTO conveyor.jobs (id, job_class, queue) OVERRIDING SYSTEM VALUE
  VALUES (5000000000, 'tap.locks.Big', 'tap_locks_big'), (8589934591, 'tap.locks.Big', 'tap_locks_big');

SELECT results_eq($$SELECT id FROM conveyor.lock_jobs(ARRAY['tap_locks_big'], 10)$$,
  ARRAY[5000000000, 8589934591]::bigint[], 'lock_jobs locks jobs whose ids need more than 32 bits');
SELECT set_eq(
  $$SELECT classid::bigint, objid::bigint FROM pg_catalog.pg_locks
     WHERE locktype = 'advisory' AND pid = pg_catalog.pg_backend_pid() AND objsubid = 2
       AND classid = (1129270870 # 1)::oid$$,
  $$VALUES (1129270871::bigint, 705032704::bigint), (1129270871, 4294967295)$$,
  'their locks are key1 = 1129270870 # 1, key2 = the low 32 bits');
SELECT ok(conveyor.held_job_ids() @> ARRAY[5000000000, 8589934591]::bigint[], 'held_job_ids decodes them back');
SELECT is((SELECT count(*) FROM conveyor.lock_jobs(ARRAY['tap_locks_big'], 10)), 0::bigint,
  'lock_jobs does not lock them a second time');

SAVEPOINT finish_big;
SELECT ARRAY(SELECT conveyor.finish_jobs(ARRAY[5000000000, 8589934591]::bigint[]) ORDER BY 1) AS finished_big \gset
ROLLBACK TO SAVEPOINT finish_big;
SELECT is(:'finished_big'::bigint[], ARRAY[5000000000, 8589934591]::bigint[], 'finish_jobs resolved both');
SELECT is((SELECT count(*) FROM pg_catalog.pg_locks
            WHERE locktype = 'advisory' AND pid = pg_catalog.pg_backend_pid() AND objsubid = 2
              AND classid = (1129270870 # 1)::oid),
  0::bigint, 'and released both locks, computed from ids beyond 32 bits');

-- recheck_locked_jobs
CREATE TEMP TABLE fx (name text PRIMARY KEY, id bigint NOT NULL);
INSERT INTO fx SELECT 'ready', id FROM conveyor.enqueue('tap.locks.Recheck', queue => 'tap_locks_recheck', priority => 2);
INSERT INTO fx SELECT 'ready_urgent', id FROM conveyor.enqueue('tap.locks.Recheck', queue => 'tap_locks_recheck', priority => 1);
INSERT INTO fx SELECT 'finished', id FROM conveyor.enqueue('tap.locks.Recheck', queue => 'tap_locks_recheck');
INSERT INTO fx SELECT 'future', id FROM conveyor.enqueue('tap.locks.Recheck', queue => 'tap_locks_recheck', run_at => now() + interval '1 hour');
UPDATE conveyor.jobs SET finished_at = now() WHERE id = (SELECT id FROM fx WHERE name = 'finished');
SELECT count(pg_catalog.pg_advisory_lock(1129270870, id::integer)) AS taken FROM fx \gset

SELECT results_eq(
  $$SELECT f.name FROM conveyor.recheck_locked_jobs(ARRAY(SELECT id FROM fx ORDER BY id)) WITH ORDINALITY AS j(id, ordinality) JOIN fx AS f ON f.id = j.id ORDER BY j.ordinality$$,
  ARRAY['ready_urgent', 'ready'],
  'recheck_locked_jobs returns the still-ready jobs, most urgent first');
SELECT is(
  ARRAY(SELECT f.name FROM fx AS f JOIN pg_catalog.pg_locks AS l
           ON l.locktype = 'advisory' AND l.pid = pg_catalog.pg_backend_pid() AND l.objsubid = 2
          AND l.classid = 1129270870 AND l.objid::bigint = f.id
         ORDER BY f.name),
  ARRAY['ready', 'ready_urgent'],
  'recheck_locked_jobs releases the locks of the jobs that are no longer ready and keeps the others');
SELECT is((SELECT count(*) FROM conveyor.recheck_locked_jobs(ARRAY[]::bigint[])), 0::bigint,
  'recheck_locked_jobs of no ids returns nothing');

-- keep: at most that many, the most urgent, and the others released.
INSERT INTO fx SELECT 'keep_' || p, id FROM unnest(ARRAY[3, 1, 2]) AS p,
  LATERAL conveyor.enqueue('tap.locks.Keep', queue => 'tap_locks_keep', priority => p);
SELECT count(pg_catalog.pg_advisory_lock(1129270870, id::integer)) AS taken FROM fx WHERE name LIKE 'keep_%' \gset
SELECT results_eq(
  $$SELECT f.name FROM conveyor.recheck_locked_jobs(ARRAY(SELECT id FROM fx WHERE name LIKE 'keep_%' ORDER BY id), 2)
                        WITH ORDINALITY AS j(id, ordinality) JOIN fx AS f ON f.id = j.id ORDER BY j.ordinality$$,
  ARRAY['keep_1', 'keep_2'],
  'recheck_locked_jobs(ids, keep => 2) returns the two most urgent ready jobs');
SELECT is(
  ARRAY(SELECT f.name FROM fx AS f JOIN pg_catalog.pg_locks AS l
           ON l.locktype = 'advisory' AND l.pid = pg_catalog.pg_backend_pid() AND l.objsubid = 2
          AND l.classid = 1129270870 AND l.objid::bigint = f.id
         WHERE f.name LIKE 'keep_%'
         ORDER BY f.name),
  ARRAY['keep_1', 'keep_2'],
  'and releases the lock of the ready job beyond keep');

SELECT * FROM finish();
ROLLBACK;
