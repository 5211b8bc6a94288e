-- Deploy conveyor:unlock_jobs to pg
-- requires: job_locks

BEGIN;

CREATE FUNCTION conveyor.unlock_jobs(ids bigint[], held bigint[] DEFAULT NULL)
RETURNS SETOF bigint
LANGUAGE plpgsql  -- not SQL: see held_job_ids
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  RETURN QUERY SELECT r.id FROM conveyor.release_job_locks(unlock_jobs.ids, unlock_jobs.held) AS r(id);
END
$$;

COMMENT ON FUNCTION conveyor.unlock_jobs(bigint[], bigint[]) IS
  'Releases the calling session''s advisory locks on the given jobs (ones it locked but will '
  'not work, or ones job code resolved on another connection) and returns the ids released. '
  'Ids the session does not hold are ignored, without a warning; other sessions'' locks are '
  'never touched. When job code resolved the job, call this only after that transaction '
  'committed. Changes no row. held (optional): the ids of the jobs the caller knows its session '
  'holds; it saves reading pg_locks, and only locks of ids in both lists are released.';

REVOKE ALL ON FUNCTION conveyor.unlock_jobs(bigint[], bigint[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION conveyor.unlock_jobs(bigint[], bigint[]) TO conveyor_worker;

COMMIT;
