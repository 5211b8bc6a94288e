-- Deploy conveyor:finish_job to pg
-- requires: job_locks

BEGIN;

CREATE FUNCTION conveyor.finish_jobs(ids bigint[])
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
    UPDATE conveyor.jobs AS j SET finished_at = now()
     WHERE j.id = ANY (finish_jobs.ids) AND j.finished_at IS NULL AND j.expired_at IS NULL
    RETURNING j.id
  )
  SELECT coalesce(array_agg(done.id), '{}') INTO v_done FROM done;

  -- Release the caller's locks last: release_job_locks keeps each job locked
  -- until this transaction commits, so the change above is visible before any
  -- other session can lock the job.
  PERFORM conveyor.release_job_locks(finish_jobs.ids);
  RETURN QUERY SELECT unnest(v_done);
END
$$;

COMMENT ON FUNCTION conveyor.finish_jobs(bigint[]) IS
  'Marks the given jobs finished (finished_at = now()), keeping their rows for inspection. Returns the ids it finished; an id that does not exist or whose job is already '
  'finished or expired is skipped. Does not require the caller to hold the jobs'' locks (job code '
  'resolves its job on a connection that is not the locker''s); releases those the caller holds, '
  'safely: the jobs stay locked until the calling transaction commits.';

CREATE FUNCTION conveyor.finish_job(id bigint)
RETURNS boolean
LANGUAGE sql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT EXISTS (SELECT FROM conveyor.finish_jobs(ARRAY[finish_job.id]));
$$;

COMMENT ON FUNCTION conveyor.finish_job(bigint) IS
  'The one-job form of finish_jobs: true when it finished the job, false when the id does not '
  'exist or the job is already finished or expired.';

REVOKE ALL ON FUNCTION conveyor.finish_jobs(bigint[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION conveyor.finish_job(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION conveyor.finish_jobs(bigint[]) TO conveyor_worker;
GRANT EXECUTE ON FUNCTION conveyor.finish_job(bigint) TO conveyor_worker;

COMMIT;
