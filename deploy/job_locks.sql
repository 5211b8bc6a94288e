-- Deploy conveyor:job_locks to pg
-- requires: job_locks@v0.1.0

BEGIN;

-- Reworked after v0.1.0 (issue 11): a release that fails part-way (a
-- cancel, statement_timeout) left the session without some of the locks it
-- had released while the caller's resolution was rolled back, so those jobs
-- could run again on another session while this one still counted them. Now
-- the locks are released inside a block that, on any error, takes back those
-- it released before re-raising: the session holds what it held before.
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
  v_mine bigint[] := '{}';
  v_job bigint;
  v_released bigint[] := '{}';
BEGIN
  -- Only locks the session holds are touched: the ids it claims to hold when
  -- the caller keeps count (the locker does), else those pg_locks lists. The
  -- transaction-level lock is only tried, so a wrong claim about a job another
  -- session holds skips that job instead of waiting for it. Each job taken
  -- here stays locked by this transaction until it ends, whatever happens
  -- below. Loops of simple expressions (no query, evaluated without the
  -- executor) cost less than the queries they replace for the batches a
  -- worker sends.
  FOREACH v_job IN ARRAY coalesce(release_job_locks.ids, '{}') LOOP
    IF conveyor.sorted_array_contains(v_held, v_job)
       AND pg_catalog.pg_try_advisory_xact_lock(conveyor.job_lock_key1(v_job), conveyor.job_lock_key2(v_job)) THEN
      v_mine := array_append(v_mine, v_job);
    END IF;
  END LOOP;

  -- The session locks are released one by one, each release and its record
  -- in v_released one statement (interrupts are taken between statements),
  -- so that when anything fails the handler knows exactly which to take
  -- back. A job listed twice is released once: the second unlock is false.
  BEGIN
    FOREACH v_job IN ARRAY v_mine LOOP
      v_released := array_append(v_released,
                                 CASE WHEN pg_catalog.pg_advisory_unlock(conveyor.job_lock_key1(v_job), conveyor.job_lock_key2(v_job))
                                      THEN v_job END);
    END LOOP;
  EXCEPTION WHEN query_canceled OR OTHERS THEN  -- OTHERS does not catch query_canceled
    -- Take back what this call released. No other session can have taken
    -- one of them in between: this transaction's lock keeps them out.
    PERFORM pg_catalog.pg_advisory_lock(conveyor.job_lock_key1(r), conveyor.job_lock_key2(r))
       FROM unnest(v_released) AS r
      WHERE r IS NOT NULL;
    RAISE;
  END;

  FOREACH v_job IN ARRAY v_released LOOP
    IF v_job IS NOT NULL THEN
      RETURN NEXT v_job;
    END IF;
  END LOOP;
END
$$;

COMMENT ON FUNCTION conveyor.release_job_locks(bigint[], bigint[]) IS
  'Internal. Releases the calling session''s advisory locks on the given jobs and returns the '
  'ids it released; ids the session does not hold are ignored without a warning. The job stays '
  'locked by a transaction-level lock until the calling transaction ends, so a resolution in '
  'the same transaction commits before another session can lock the job. held, when not NULL, '
  'lists the jobs the caller knows its session holds and saves the pg_locks read (see '
  'held_job_ids); only ids in both lists are released. When the release fails (a cancel, '
  'statement_timeout, any error) it takes back the locks it released before raising the error '
  'again: the session holds what it held before the call.';

COMMIT;
