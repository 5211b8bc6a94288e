-- Deploy conveyor:finish_job to pg
-- requires: job_locks

BEGIN;

CREATE FUNCTION conveyor.finish_jobs(ids bigint[], held bigint[] DEFAULT NULL)
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
  -- resolution never changes a job twice.
  WITH done AS (
    UPDATE conveyor.jobs AS j SET finished_at = now()
     -- coalesce(): written so, the test does not imply jobs_ready_idx's predicate,
     -- and no plan can walk that index (the whole backlog) instead of probing ids.
     WHERE j.id = ANY (finish_jobs.ids) AND coalesce(j.finished_at, j.expired_at) IS NULL
    RETURNING j.id
  )
  SELECT coalesce(array_agg(done.id), '{}') INTO v_done FROM done;

  -- Release the caller's locks last: release_job_locks keeps each job locked
  -- until this transaction commits, so the change above is visible before any
  -- other session can lock the job.
  PERFORM conveyor.release_job_locks(finish_jobs.ids, finish_jobs.held);
  RETURN QUERY SELECT unnest(v_done);
END
$$;

COMMENT ON FUNCTION conveyor.finish_jobs(bigint[], bigint[]) IS
  'Marks the given jobs finished (finished_at = now()), keeping their rows for inspection. Returns the ids it finished; an id that does not exist or whose job is already '
  'finished or expired is skipped. Does not require the caller to hold the jobs'' locks (job code '
  'resolves its job on a connection that is not the locker''s); releases those the caller holds, '
  'safely: the jobs stay locked until the calling transaction commits. held (optional): the ids '
  'of the jobs the caller knows its session holds, as a locker that keeps count does; it saves '
  'reading pg_locks (a few hundred microseconds a call), and only locks of ids in both lists '
  'are released.';

CREATE FUNCTION conveyor.finish_job(id bigint)
RETURNS boolean
LANGUAGE plpgsql  -- not SQL: see held_job_ids
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  RETURN EXISTS (SELECT FROM conveyor.finish_jobs(ARRAY[finish_job.id]));
END
$$;

COMMENT ON FUNCTION conveyor.finish_job(bigint) IS
  'The one-job form of finish_jobs: true when it finished the job, false when the id does not '
  'exist or the job is already finished or expired.';

REVOKE ALL ON FUNCTION conveyor.finish_jobs(bigint[], bigint[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION conveyor.finish_job(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION conveyor.finish_jobs(bigint[], bigint[]) TO conveyor_worker;
GRANT EXECUTE ON FUNCTION conveyor.finish_job(bigint) TO conveyor_worker;

COMMIT;
