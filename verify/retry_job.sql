-- Verify conveyor:retry_job on pg

BEGIN;

DO $$
BEGIN
  ASSERT pg_catalog.has_function_privilege('conveyor_worker', 'conveyor.retry_job(bigint, text, text, double precision, boolean)', 'execute');
  ASSERT NOT pg_catalog.has_function_privilege('conveyor_enqueuer', 'conveyor.retry_job(bigint, text, text, double precision, boolean)', 'execute');
  ASSERT to_regprocedure('conveyor.retry_job(bigint, text, text, double precision)') IS NULL;
END
$$;

ROLLBACK;
