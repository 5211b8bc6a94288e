-- Deploy conveyor:job_locks to pg
-- requires: job_locks@v0.1.0

BEGIN;

-- Reworked after v0.1.0 (issue 11): a release that fails part-way (a
-- cancel, statement_timeout) left the session without some of the locks it
-- had released while the caller's resolution was rolled back, so those jobs
-- could run again on another session while this one still counted them. Now
-- the locks are released in one statement inside a block that, on any error,
-- gives them back before re-raising: the session holds what it held before.
CREATE OR REPLACE FUNCTION conveyor.release_job_locks(ids bigint[], held bigint[] DEFAULT NULL)
RETURNS SETOF bigint
LANGUAGE plpgsql  -- not SQL: see held_job_ids
VOLATILE
SET search_path = pg_catalog, pg_temp
SET client_min_messages = error
AS $$
DECLARE
  -- Sorted, for a binary search (sorted_array_contains) per id instead of a
  -- scan of the whole list: ids times held comparisons cost half a
  -- millisecond for a 341-job batch.
  v_held bigint[] := ARRAY(SELECT h FROM unnest(coalesce(release_job_locks.held, conveyor.held_job_ids())) AS h
                            WHERE h IS NOT NULL ORDER BY 1);
  v_mine bigint[];
  v_released bigint[];
BEGIN
  -- Only locks the session holds are touched: the ids it claims to hold when
  -- the caller keeps count (the locker does), else those pg_locks lists. The
  -- transaction-level lock is only tried, so a wrong claim about a job another
  -- session holds skips that job instead of waiting for it; CASE keeps the try
  -- away from ids the session does not hold. Each job taken here stays locked
  -- by this transaction until it ends, whatever happens below.
  v_mine := ARRAY(
    SELECT i.id
      FROM (SELECT DISTINCT unnest(release_job_locks.ids) AS id) AS i
     WHERE CASE WHEN conveyor.sorted_array_contains(v_held, i.id)
                THEN pg_catalog.pg_try_advisory_xact_lock(conveyor.job_lock_key1(i.id), conveyor.job_lock_key2(i.id))
                ELSE false
           END);

  BEGIN
    v_released := ARRAY(
      SELECT m FROM unnest(v_mine) AS m
       WHERE pg_catalog.pg_advisory_unlock(conveyor.job_lock_key1(m), conveyor.job_lock_key2(m)));
    RETURN QUERY SELECT unnest(v_released);
  EXCEPTION WHEN query_canceled OR OTHERS THEN  -- OTHERS does not catch query_canceled
    -- Which of v_mine the statement above released before it failed is
    -- unknown (pg_locks cannot tell the session lock from this transaction's
    -- lock on the same job). So each is made held exactly once: unlocked
    -- (false, silently, when already released) and locked again. No other
    -- session can take it in between: this transaction's lock keeps them out.
    PERFORM pg_catalog.pg_advisory_unlock(conveyor.job_lock_key1(m), conveyor.job_lock_key2(m))
       FROM unnest(v_mine) AS m;
    PERFORM pg_catalog.pg_advisory_lock(conveyor.job_lock_key1(m), conveyor.job_lock_key2(m))
       FROM unnest(v_mine) AS m;
    RAISE;
  END;
END
$$;

COMMENT ON FUNCTION conveyor.release_job_locks(bigint[], bigint[]) IS
  'Internal. Releases the calling session''s advisory locks on the given jobs and returns the '
  'ids it released; ids the session does not hold are ignored without a warning. The job stays '
  'locked by a transaction-level lock until the calling transaction ends, so a resolution in '
  'the same transaction commits before another session can lock the job. held, when not NULL, '
  'lists the jobs the caller knows its session holds and saves the pg_locks read (see '
  'held_job_ids); only ids in both lists are released. When the release fails (a cancel, '
  'statement_timeout, any error) the session holds the given jobs it held before the call '
  '(with held given: the listed ones), each once, and the error is raised again.';

COMMIT;
