-- Verify conveyor:destroy_job on pg

BEGIN;

DO $$
BEGIN
  ASSERT pg_catalog.has_function_privilege('conveyor_worker', 'conveyor.destroy_job(bigint)', 'execute');
  ASSERT pg_catalog.has_function_privilege('conveyor_worker', 'conveyor.destroy_jobs(bigint[], bigint[])', 'execute');
  ASSERT NOT pg_catalog.has_function_privilege('conveyor_enqueuer', 'conveyor.destroy_jobs(bigint[], bigint[])', 'execute');
END
$$;

ROLLBACK;
