-- Verify conveyor:unlock_jobs on pg

BEGIN;

DO $$
BEGIN
  ASSERT pg_catalog.has_function_privilege('conveyor_worker', 'conveyor.unlock_jobs(bigint[], bigint[])', 'execute');
  ASSERT NOT pg_catalog.has_function_privilege('conveyor_enqueuer', 'conveyor.unlock_jobs(bigint[], bigint[])', 'execute');
END
$$;

ROLLBACK;
