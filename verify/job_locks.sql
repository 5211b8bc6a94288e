-- Verify conveyor:job_locks on pg

BEGIN;

DO $$
BEGIN
  ASSERT pg_catalog.has_function_privilege('conveyor_worker', 'conveyor.held_job_ids()', 'execute');
  ASSERT pg_catalog.has_function_privilege('conveyor_worker', 'conveyor.working_job_ids()', 'execute');
  ASSERT pg_catalog.has_function_privilege('conveyor_worker', 'conveyor.release_job_locks(bigint[], bigint[])', 'execute');
  ASSERT NOT pg_catalog.has_function_privilege('conveyor_enqueuer', 'conveyor.release_job_locks(bigint[], bigint[])', 'execute');
END
$$;

ROLLBACK;
