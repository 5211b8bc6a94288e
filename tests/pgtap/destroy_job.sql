-- conveyor.destroy_job(id) and conveyor.destroy_jobs(ids): deletes jobs.
--
-- A resolution keeps the job locked by a transaction-level lock until the
-- transaction ends. To see what remains once it has ended, one resolution runs
-- inside a savepoint and is rolled back to: that drops the transaction-level
-- lock (and the resolution), while the session-level unlock stays done.
-- Results needed after the rollback are carried over in psql variables.
BEGIN;
SELECT plan(33);

SELECT has_function('conveyor', 'destroy_job', ARRAY['bigint'], 'conveyor.destroy_job(bigint) exists');
SELECT function_returns('conveyor', 'destroy_job', ARRAY['bigint'], 'boolean', 'conveyor.destroy_job returns boolean');
SELECT has_function('conveyor', 'destroy_jobs', ARRAY['bigint[]', 'bigint[]'], 'conveyor.destroy_jobs(bigint[], bigint[]) exists');
SELECT function_returns('conveyor', 'destroy_jobs', ARRAY['bigint[]', 'bigint[]'], 'setof bigint', 'conveyor.destroy_jobs returns SETOF bigint');

CREATE TEMP TABLE fx (name text PRIMARY KEY, id bigint NOT NULL);
INSERT INTO fx SELECT n, id FROM unnest(ARRAY['locked', 'bystander', 'savepoint', 'batch_1', 'batch_2']) WITH ORDINALITY AS u(n, o),
  LATERAL conveyor.enqueue('tap.destroy_job.Job', jsonb_build_array(n), queue => 'tap_destroy_job', priority => o::integer,
                           run_at => now() - interval '1 minute', data => '{"tag": "t"}', maximum_retry_count => 3);
INSERT INTO fx SELECT 'resolved_elsewhere', id FROM conveyor.enqueue('tap.destroy_job.Job', queue => 'tap_destroy_job_elsewhere');
INSERT INTO fx SELECT 'unlocked', id FROM conveyor.enqueue('tap.destroy_job.Job', queue => 'tap_destroy_job_other', run_at => now() - interval '1 minute');
INSERT INTO fx SELECT 'future', id FROM conveyor.enqueue('tap.destroy_job.Job', queue => 'tap_destroy_job_other', run_at => now() + interval '1 hour');
INSERT INTO fx SELECT 'finished', id FROM conveyor.enqueue('tap.destroy_job.Job', queue => 'tap_destroy_job_other');
INSERT INTO fx SELECT 'expired', id FROM conveyor.enqueue('tap.destroy_job.Job', queue => 'tap_destroy_job_other');
UPDATE conveyor.jobs SET finished_at = '2001-01-01 00:00:00+00' WHERE id = (SELECT id FROM fx WHERE name = 'finished');
UPDATE conveyor.jobs SET expired_at = '2001-01-01 00:00:00+00' WHERE id = (SELECT id FROM fx WHERE name = 'expired');
INSERT INTO fx SELECT 'missing', max(id) + 1000000 FROM fx;
UPDATE conveyor.jobs SET error_count = 2, last_error_message = 'earlier', last_error_backtrace = 'trace'
 WHERE id IN (SELECT id FROM fx);
CREATE TEMP TABLE before AS SELECT * FROM conveyor.jobs WHERE id IN (SELECT id FROM fx);

SELECT id AS locked FROM fx WHERE name = 'locked' \gset
SELECT id AS bystander FROM fx WHERE name = 'bystander' \gset
SELECT id AS savepoint_job FROM fx WHERE name = 'savepoint' \gset
SELECT id AS batch_1 FROM fx WHERE name = 'batch_1' \gset
SELECT id AS batch_2 FROM fx WHERE name = 'batch_2' \gset
SELECT id AS unlocked FROM fx WHERE name = 'unlocked' \gset
SELECT id AS future FROM fx WHERE name = 'future' \gset
SELECT id AS finished FROM fx WHERE name = 'finished' \gset
SELECT id AS expired FROM fx WHERE name = 'expired' \gset
SELECT id AS missing FROM fx WHERE name = 'missing' \gset
SELECT id AS resolved_elsewhere FROM fx WHERE name = 'resolved_elsewhere' \gset

SELECT is((SELECT count(*) FROM conveyor.lock_jobs(ARRAY['tap_destroy_job'], 10)), 5::bigint,
  'fixture: five jobs locked by this session');

-- One job ---------------------------------------------------------------------

SELECT is(conveyor.destroy_job(:locked), true, 'destroy_job of a locked, ready job returns true');
SELECT is((SELECT count(*) FROM conveyor.jobs WHERE id = :locked), 0::bigint, 'the job''s row is deleted');
SELECT is((SELECT count(*) FROM pg_catalog.pg_locks
            WHERE locktype = 'advisory' AND objsubid = 2 AND pid = pg_catalog.pg_backend_pid()
              AND objid::bigint = :locked),
  1::bigint, 'the job stays locked until the transaction ends');
SELECT is(conveyor.destroy_job(:locked), false, 'a second destroy_job of the same job returns false');
SELECT is(conveyor.destroy_job(:missing), false, 'destroy_job of an id that does not exist returns false');

SELECT is(conveyor.destroy_job(:finished), false, 'destroy_job of a finished job returns false');
SELECT results_eq($$SELECT finished_at, expired_at FROM conveyor.jobs WHERE id = (SELECT id FROM fx WHERE name = 'finished')$$,
  $$VALUES ('2001-01-01 00:00:00+00'::timestamptz, NULL::timestamptz)$$,
  'destroy_job leaves a finished job as it was');
SELECT is(conveyor.destroy_job(:expired), false, 'destroy_job of an expired job returns false');
SELECT results_eq($$SELECT finished_at, expired_at FROM conveyor.jobs WHERE id = (SELECT id FROM fx WHERE name = 'expired')$$,
  $$VALUES (NULL::timestamptz, '2001-01-01 00:00:00+00'::timestamptz)$$,
  'destroy_job leaves an expired job as it was (a late duplicate cannot undo an expiry)');

SELECT is(conveyor.destroy_job(:unlocked), true,
  'destroy_job of a job the caller does not hold returns true (job code resolves on another connection)');
SELECT is((SELECT count(*) FROM conveyor.jobs WHERE id = :unlocked), 0::bigint, 'the job''s row is deleted');
SELECT is((SELECT count(*) FROM pg_catalog.pg_locks
            WHERE locktype = 'advisory' AND objsubid = 2 AND objid::bigint = :unlocked),
  0::bigint, 'destroy_job of a job nobody holds takes no lock on it');
SELECT is(conveyor.destroy_job(:future), true, 'destroy_job of a scheduled (future) job returns true');

-- The session-level lock is gone once the transaction ends -------------------

-- resolved_elsewhere: locked here, then resolved by job code on another
-- connection (simulated by a direct UPDATE); resolving it here is a no-op
-- that still releases this session's lock.
SELECT is((SELECT count(*) FROM conveyor.lock_jobs_by_id(ARRAY[:resolved_elsewhere]::bigint[], queues => (SELECT array_agg(DISTINCT queue) FROM conveyor.jobs))), 1::bigint,
  'fixture: resolved_elsewhere locked by this session');
UPDATE conveyor.jobs SET expired_at = '2001-01-01 00:00:00+00' WHERE id = :resolved_elsewhere;

SAVEPOINT resolve;
SELECT conveyor.destroy_job(:savepoint_job) AS savepoint_result,
       (SELECT count(*) FROM pg_catalog.pg_locks
         WHERE locktype = 'advisory' AND objsubid = 2 AND pid = pg_catalog.pg_backend_pid()
           AND objid::bigint = :savepoint_job) AS savepoint_locks,
       conveyor.destroy_job(:resolved_elsewhere) AS elsewhere_result
\gset
ROLLBACK TO SAVEPOINT resolve;

SELECT is(:'savepoint_result'::boolean, true, 'destroy_job of the savepoint job returned true');
SELECT is(:savepoint_locks::bigint, 1::bigint, 'inside the transaction the resolved job was still locked');
SELECT is((SELECT count(*) FROM pg_catalog.pg_locks
            WHERE locktype = 'advisory' AND objsubid = 2 AND pid = pg_catalog.pg_backend_pid()
              AND objid::bigint = :savepoint_job),
  0::bigint, 'once the transaction is over the session no longer holds the job: destroy_job released its lock');
SELECT is(:'elsewhere_result'::boolean, false, 'destroy_job of a held job that was resolved elsewhere returns false');
SELECT is((SELECT count(*) FROM pg_catalog.pg_locks
            WHERE locktype = 'advisory' AND objsubid = 2 AND pid = pg_catalog.pg_backend_pid()
              AND objid::bigint = :resolved_elsewhere),
  0::bigint, '... and still releases the session''s lock on it');
SELECT is((SELECT count(*) FROM pg_catalog.pg_locks
            WHERE locktype = 'advisory' AND objsubid = 2 AND pid = pg_catalog.pg_backend_pid()
              AND objid::bigint = :bystander),
  1::bigint, 'another job the session holds keeps its lock');
SELECT results_eq($$SELECT id FROM conveyor.lock_jobs_by_id(ARRAY(SELECT id FROM fx WHERE name = 'savepoint'), queues => (SELECT array_agg(DISTINCT queue) FROM conveyor.jobs))$$,
  ARRAY[:savepoint_job]::bigint[],
  'a rolled-back resolution leaves the job ready and unlocked: it can be locked again');

-- Many jobs -------------------------------------------------------------------

SELECT set_eq(
  $$SELECT conveyor.destroy_jobs(ARRAY(SELECT f.id FROM unnest(ARRAY['batch_1', 'batch_2', 'missing', 'finished', 'expired', 'batch_1']) AS n(name) JOIN fx AS f USING (name)))$$,
  ARRAY[:batch_1, :batch_2]::bigint[],
  'destroy_jobs returns the ids it resolved, each once, skipping missing, finished and expired ones');
SELECT is((SELECT count(*) FROM conveyor.jobs WHERE id = :batch_1), 0::bigint, 'the job''s row is deleted');
SELECT is((SELECT count(*) FROM conveyor.jobs WHERE id = :batch_2), 0::bigint, 'the job''s row is deleted');
SELECT is(ARRAY(SELECT conveyor.destroy_jobs(ARRAY[:batch_1, :batch_2]::bigint[])), '{}'::bigint[],
  'destroy_jobs of jobs already resolved returns no id');
SELECT is(ARRAY(SELECT conveyor.destroy_jobs(ARRAY[]::bigint[])), '{}'::bigint[], 'destroy_jobs of an empty array returns no id');
SELECT is(ARRAY(SELECT conveyor.destroy_jobs(NULL)), '{}'::bigint[], 'destroy_jobs of NULL returns no id and raises nothing');

SELECT results_eq($$SELECT j.* FROM conveyor.jobs AS j JOIN fx AS f ON f.id = j.id WHERE f.name = 'bystander'$$,
  $$SELECT b.* FROM before AS b JOIN fx AS f ON f.id = b.id WHERE f.name = 'bystander'$$,
  'a job not named is untouched');

SELECT * FROM finish();
ROLLBACK;
