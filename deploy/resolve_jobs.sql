-- Deploy conveyor:resolve_jobs to pg
-- requires: job_locks

BEGIN;

-- The body of finish_jobs, destroy_jobs and expire_jobs, which differ only in
-- what they do to the row.
CREATE FUNCTION conveyor.resolve_jobs(action text, ids bigint[], held bigint[] DEFAULT NULL)
RETURNS SETOF bigint
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
-- Plans once per session that never scan the jobs table: see deploy/lock_jobs.sql.
SET enable_seqscan = off
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
  v_done bigint[];
BEGIN
  -- A job already finished or expired is left alone, so a late or repeated
  -- resolution never changes a job twice. coalesce(): written so, the test
  -- does not imply jobs_ready_idx's predicate, and no plan can walk that
  -- index (the whole backlog) instead of probing ids.
  IF resolve_jobs.action = 'destroy' THEN
    WITH done AS (
      DELETE FROM conveyor.jobs AS j
       WHERE j.id = ANY (resolve_jobs.ids) AND coalesce(j.finished_at, j.expired_at) IS NULL
      RETURNING j.id
    )
    SELECT coalesce(array_agg(done.id), '{}') INTO v_done FROM done;
  ELSIF resolve_jobs.action IN ('finish', 'expire') THEN
    -- Both columns are NULL before (the test below), so one of them stays so.
    WITH done AS (
      UPDATE conveyor.jobs AS j
         SET finished_at = CASE WHEN resolve_jobs.action = 'finish' THEN now() END,
             expired_at = CASE WHEN resolve_jobs.action = 'expire' THEN now() END
       WHERE j.id = ANY (resolve_jobs.ids) AND coalesce(j.finished_at, j.expired_at) IS NULL
      RETURNING j.id
    )
    SELECT coalesce(array_agg(done.id), '{}') INTO v_done FROM done;
  ELSE
    RAISE EXCEPTION 'conveyor.resolve_jobs: action must be finish, destroy or expire, not %', coalesce(resolve_jobs.action, 'NULL')
      USING ERRCODE = '22023';
  END IF;

  -- Release the caller's locks last: release_job_locks keeps each job locked
  -- until this transaction commits, so the change above is visible before any
  -- other session can lock the job.
  PERFORM conveyor.release_job_locks(resolve_jobs.ids, resolve_jobs.held);
  RETURN QUERY SELECT unnest(v_done);
END
$$;

COMMENT ON FUNCTION conveyor.resolve_jobs(text, bigint[], bigint[]) IS
  'Internal. The one body of finish_jobs, destroy_jobs and expire_jobs: action ''finish'' sets '
  'finished_at = now(), ''expire'' sets expired_at = now(), ''destroy'' deletes the row, for '
  'each given job not already finished or expired, and returns the ids it resolved. Then '
  'releases the caller''s locks on the given jobs through release_job_locks (held as there), '
  'so each job stays locked until the calling transaction commits. Errors: 22023 an unknown '
  'action.';

REVOKE ALL ON FUNCTION conveyor.resolve_jobs(text, bigint[], bigint[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION conveyor.resolve_jobs(text, bigint[], bigint[]) TO conveyor_worker;

COMMIT;
