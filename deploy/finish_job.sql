-- Deploy conveyor:finish_job to pg
-- requires: resolve_jobs

BEGIN;

CREATE FUNCTION conveyor.finish_jobs(ids bigint[], held bigint[] DEFAULT NULL)
RETURNS SETOF bigint
LANGUAGE plpgsql  -- not SQL: see held_job_ids
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  RETURN QUERY SELECT r.id FROM conveyor.resolve_jobs('finish', finish_jobs.ids, finish_jobs.held) AS r(id);
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
  RETURN EXISTS (SELECT FROM conveyor.resolve_jobs('finish', ARRAY[finish_job.id]));
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
