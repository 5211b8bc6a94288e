-- Deploy conveyor:unlock_jobs to pg
-- requires: job_locks

BEGIN;

CREATE FUNCTION conveyor.unlock_jobs(ids bigint[])
RETURNS SETOF bigint
LANGUAGE sql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT conveyor.release_job_locks(unlock_jobs.ids);
$$;

COMMENT ON FUNCTION conveyor.unlock_jobs(bigint[]) IS
  'Releases the calling session''s advisory locks on the given jobs (ones it locked but will '
  'not work, or ones job code resolved on another connection) and returns the ids released. '
  'Ids the session does not hold are ignored, without a warning; other sessions'' locks are '
  'never touched. When job code resolved the job, call this only after that transaction '
  'committed. Changes no row.';

REVOKE ALL ON FUNCTION conveyor.unlock_jobs(bigint[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION conveyor.unlock_jobs(bigint[]) TO conveyor_worker;

COMMIT;
