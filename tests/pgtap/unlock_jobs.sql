-- conveyor.unlock_jobs(ids bigint[]): release jobs the session will not work.
--
-- A release keeps the job locked by a transaction-level lock until the
-- transaction ends. To see what remains once it has ended, the release runs
-- inside a savepoint and is rolled back to: that drops the transaction-level
-- lock, while the session-level unlock (not transactional) stays done.
-- Results needed after the rollback are carried over in psql variables.
BEGIN;
SELECT plan(16);

SELECT has_function('conveyor', 'unlock_jobs', ARRAY['bigint[]', 'bigint[]'], 'conveyor.unlock_jobs(bigint[], bigint[]) exists');

CREATE TEMP TABLE fx (name text PRIMARY KEY, id bigint NOT NULL);
INSERT INTO fx SELECT 'job_' || g, id FROM generate_series(1, 3) AS g,
  LATERAL conveyor.enqueue('tap.unlock.Job', queue => 'tap_unlock', priority => g);
INSERT INTO fx SELECT 'not_locked', id FROM conveyor.enqueue('tap.unlock.NotLocked', queue => 'tap_unlock_other');

SELECT is((SELECT count(*) FROM conveyor.lock_jobs(ARRAY['tap_unlock'], 10)), 3::bigint,
  'fixture: three jobs locked');

SELECT id AS job_1 FROM fx WHERE name = 'job_1' \gset
SELECT id AS job_2 FROM fx WHERE name = 'job_2' \gset
SELECT id AS job_3 FROM fx WHERE name = 'job_3' \gset
SELECT id AS not_locked FROM fx WHERE name = 'not_locked' \gset

SAVEPOINT unlock;
SELECT ARRAY(SELECT conveyor.unlock_jobs(ARRAY[:job_1, :job_2, :not_locked, -5]::bigint[]) ORDER BY 1) AS released,
       (SELECT count(*) FROM pg_catalog.pg_locks
         WHERE locktype = 'advisory' AND objsubid = 2 AND pid = pg_catalog.pg_backend_pid()
           AND objid::bigint IN (:job_1, :job_2)) AS still_locked_in_transaction,
       (SELECT count(*) FROM pg_catalog.pg_locks
         WHERE locktype = 'advisory' AND objsubid = 2
           AND objid::bigint = :not_locked) AS not_locked_locks
\gset
ROLLBACK TO SAVEPOINT unlock;

SELECT is(:'released'::bigint[], ARRAY[:job_1, :job_2]::bigint[],
  'unlock_jobs returns the ids it released, ignoring ids not held and ids that do not exist');
SELECT is(:still_locked_in_transaction::bigint, 2::bigint,
  'until the transaction ends the released jobs stay locked (transaction-level lock)');
SELECT is(:not_locked_locks::bigint, 0::bigint, 'an id the session does not hold gets no lock');
SELECT is(
  ARRAY(SELECT objid::bigint FROM pg_catalog.pg_locks
         WHERE locktype = 'advisory' AND objsubid = 2 AND pid = pg_catalog.pg_backend_pid()
           AND objid::bigint IN (:job_1, :job_2, :job_3)),
  ARRAY[:job_3]::bigint[],
  'once the transaction ends the released jobs are unlocked, and the job not named stays locked');
SELECT results_eq(
  $$SELECT id FROM conveyor.lock_jobs(ARRAY['tap_unlock'], 10)$$,
  ARRAY[:job_1, :job_2]::bigint[],
  'the released jobs can be locked again');
SELECT is((SELECT count(*) FROM conveyor.jobs
            WHERE id IN (:job_1, :job_2, :job_3) AND finished_at IS NULL AND expired_at IS NULL
              AND error_count = 0 AND run_at <= now()),
  3::bigint, 'unlock_jobs changes no row: the jobs are still ready');

SELECT is(ARRAY(SELECT conveyor.unlock_jobs(ARRAY[]::bigint[])), '{}'::bigint[],
  'an empty array releases nothing');
SELECT is(ARRAY(SELECT conveyor.unlock_jobs(ARRAY[:not_locked, -1]::bigint[])), '{}'::bigint[],
  'ids not held are ignored without an error');
SELECT is(ARRAY(SELECT conveyor.unlock_jobs(NULL)), '{}'::bigint[],
  'a NULL array releases nothing and raises nothing');

-- Releasing twice in one transaction: the first call dropped the session-level
-- lock, so the second holds nothing to release and must return no id (the
-- transaction-level lock the first call took does not count as held).
SELECT is(ARRAY(SELECT conveyor.unlock_jobs(ARRAY[:job_3]::bigint[])), ARRAY[:job_3]::bigint[],
  'unlock_jobs releases a held job');
SELECT is(ARRAY(SELECT conveyor.unlock_jobs(ARRAY[:job_3]::bigint[])), '{}'::bigint[],
  'a second unlock_jobs of the same job in the same transaction releases nothing and returns no id');

-- held, the caller's own list, may come in any order, with repeats and NULLs
-- (it is sorted for a binary search): only ids in both lists are released.
INSERT INTO fx SELECT 'h_' || g, id FROM generate_series(1, 3) AS g,
  LATERAL conveyor.enqueue('tap.unlock.Held', queue => 'tap_unlock_held', priority => g);
SELECT is((SELECT count(*) FROM conveyor.lock_jobs(ARRAY['tap_unlock_held'], 10)), 3::bigint,
  'fixture: three more jobs locked');
SELECT id AS h_1 FROM fx WHERE name = 'h_1' \gset
SELECT id AS h_2 FROM fx WHERE name = 'h_2' \gset
SELECT id AS h_3 FROM fx WHERE name = 'h_3' \gset
SELECT is(ARRAY(SELECT conveyor.unlock_jobs(ARRAY[:h_3, :h_1, :h_1, NULL, :h_2]::bigint[],
                                            held => ARRAY[:h_3, NULL, :h_1, :h_1]::bigint[]) ORDER BY 1),
  ARRAY[:h_1, :h_3]::bigint[],
  'an unsorted held list with repeats and NULLs releases exactly the ids in both lists');
SELECT is((SELECT count(*) FROM pg_catalog.pg_locks
            WHERE locktype = 'advisory' AND objsubid = 2 AND pid = pg_catalog.pg_backend_pid()
              AND objid::bigint = :h_2),
  1::bigint, 'a job asked for but not named in held keeps its lock');

SELECT * FROM finish();
ROLLBACK;
