-- Verify conveyor:job_stats on pg

BEGIN;

SELECT job_class, count, count_working, count_errored, highest_error_count, oldest_run_at
  FROM conveyor.job_stats()
 WHERE false;

DO $$
BEGIN
  ASSERT pg_catalog.has_function_privilege('conveyor_worker', 'conveyor.job_stats()', 'execute');
END
$$;

ROLLBACK;
