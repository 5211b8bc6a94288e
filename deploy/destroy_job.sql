-- Deploy conveyor:destroy_job to pg
-- requires: job_locks

BEGIN;

CREATE FUNCTION conveyor.destroy_jobs(ids bigint[])
RETURNS SETOF bigint
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_done bigint[];
BEGIN
  -- A job already finished or expired is left alone, so a late or repeated
  -- resolution never changes a job twice.
  WITH done AS (
    DELETE FROM conveyor.jobs AS j
     WHERE j.id = ANY (destroy_jobs.ids) AND j.finished_at IS NULL AND j.expired_at IS NULL
    RETURNING j.id
  )
  SELECT coalesce(array_agg(done.id), '{}') INTO v_done FROM done;

  -- Release the caller's locks last: release_job_locks keeps each job locked
  -- until this transaction commits, so the change above is visible before any
  -- other session can lock the job.
  PERFORM conveyor.release_job_locks(destroy_jobs.ids);
  RETURN QUERY SELECT unnest(v_done);
END
$$;

COMMENT ON FUNCTION conveyor.destroy_jobs(bigint[]) IS
  'Deletes the given jobs, the usual end of a job that worked. Returns the ids it destroyed; an id that does not exist or whose job is already '
  'finished or expired is skipped. Does not require the caller to hold the jobs'' locks (job code '
  'resolves its job on a connection that is not the locker''s); releases those the caller holds, '
  'safely: the jobs stay locked until the calling transaction commits.';

CREATE FUNCTION conveyor.destroy_job(id bigint)
RETURNS boolean
LANGUAGE sql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT EXISTS (SELECT FROM conveyor.destroy_jobs(ARRAY[destroy_job.id]));
$$;

COMMENT ON FUNCTION conveyor.destroy_job(bigint) IS
  'The one-job form of destroy_jobs: true when it destroyed the job, false when the id does not '
  'exist or the job is already finished or expired.';

REVOKE ALL ON FUNCTION conveyor.destroy_jobs(bigint[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION conveyor.destroy_job(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION conveyor.destroy_jobs(bigint[]) TO conveyor_worker;
GRANT EXECUTE ON FUNCTION conveyor.destroy_job(bigint) TO conveyor_worker;

COMMIT;
