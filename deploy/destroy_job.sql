-- Deploy conveyor:destroy_job to pg
-- requires: resolve_jobs

BEGIN;

CREATE FUNCTION conveyor.destroy_jobs(ids bigint[], held bigint[] DEFAULT NULL)
RETURNS SETOF bigint
LANGUAGE plpgsql  -- not SQL: see held_job_ids
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  RETURN QUERY SELECT r.id FROM conveyor.resolve_jobs('destroy', destroy_jobs.ids, destroy_jobs.held) AS r(id);
END
$$;

COMMENT ON FUNCTION conveyor.destroy_jobs(bigint[], bigint[]) IS
  'Deletes the given jobs, the usual end of a job that worked. Returns the ids it destroyed; an id that does not exist or whose job is already '
  'finished or expired is skipped. Does not require the caller to hold the jobs'' locks (job code '
  'resolves its job on a connection that is not the locker''s); releases those the caller holds, '
  'safely: the jobs stay locked until the calling transaction commits. held (optional): the ids '
  'of the jobs the caller knows its session holds, as a locker that keeps count does; it saves '
  'reading pg_locks (a few hundred microseconds a call), and only locks of ids in both lists '
  'are released.';

CREATE FUNCTION conveyor.destroy_job(id bigint)
RETURNS boolean
LANGUAGE plpgsql  -- not SQL: see held_job_ids
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  RETURN EXISTS (SELECT FROM conveyor.resolve_jobs('destroy', ARRAY[destroy_job.id]));
END
$$;

COMMENT ON FUNCTION conveyor.destroy_job(bigint) IS
  'The one-job form of destroy_jobs: true when it destroyed the job, false when the id does not '
  'exist or the job is already finished or expired.';

REVOKE ALL ON FUNCTION conveyor.destroy_jobs(bigint[], bigint[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION conveyor.destroy_job(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION conveyor.destroy_jobs(bigint[], bigint[]) TO conveyor_worker;
GRANT EXECUTE ON FUNCTION conveyor.destroy_job(bigint) TO conveyor_worker;

COMMIT;
