-- Revert conveyor:job_locks from pg

BEGIN;

-- Back to v0.1.0's release_job_locks (deploy/job_locks@v0.1.0.sql).
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
BEGIN
  -- Only locks the session holds are touched: the ids it claims to hold when
  -- the caller keeps count (the locker does), else those pg_locks lists. The
  -- transaction-level lock is only tried, so a wrong claim about a job another
  -- session holds skips that job instead of waiting for it; CASE keeps the try
  -- away from ids the session does not hold.
  RETURN QUERY
  SELECT mine.id
    FROM (SELECT i.id
            FROM (SELECT DISTINCT unnest(release_job_locks.ids) AS id) AS i
           WHERE CASE WHEN conveyor.sorted_array_contains(v_held, i.id)
                      THEN pg_catalog.pg_try_advisory_xact_lock(conveyor.job_lock_key1(i.id), conveyor.job_lock_key2(i.id))
                      ELSE false
                 END
          OFFSET 0) AS mine
   WHERE pg_catalog.pg_advisory_unlock(conveyor.job_lock_key1(mine.id), conveyor.job_lock_key2(mine.id));
END
$$;

COMMENT ON FUNCTION conveyor.release_job_locks(bigint[], bigint[]) IS
  'Internal. Releases the calling session''s advisory locks on the given jobs and returns the '
  'ids it released; ids the session does not hold are ignored without a warning. The job stays '
  'locked by a transaction-level lock until the calling transaction ends, so a resolution in '
  'the same transaction commits before another session can lock the job. held, when not NULL, '
  'lists the jobs the caller knows its session holds and saves the pg_locks read (see '
  'held_job_ids); only ids in both lists are released.';

COMMIT;
