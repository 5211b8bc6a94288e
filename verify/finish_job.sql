-- Verify conveyor:finish_job on pg

BEGIN;

DO $$
BEGIN
  ASSERT pg_catalog.has_function_privilege('conveyor_worker', 'conveyor.finish_job(bigint)', 'execute');
  ASSERT pg_catalog.has_function_privilege('conveyor_worker', 'conveyor.finish_jobs(bigint[], bigint[])', 'execute');
  ASSERT NOT pg_catalog.has_function_privilege('conveyor_enqueuer', 'conveyor.finish_jobs(bigint[], bigint[])', 'execute');
END
$$;

ROLLBACK;
