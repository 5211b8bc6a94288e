-- Verify conveyor:stats_by_label on pg

BEGIN;

SELECT job_class, count, count_working, count_errored, highest_error_count, oldest_run_at
  FROM conveyor.job_stats(label => 'verify') WHERE false;
SELECT queue, ready, scheduled, working, errored, expired, finished, oldest_ready_age, paused
  FROM conveyor.queue_stats(label => 'verify') WHERE false;

DO $$
BEGIN
  ASSERT pg_catalog.has_function_privilege('conveyor_worker', 'conveyor.job_stats(text)', 'execute');
  ASSERT pg_catalog.has_function_privilege('conveyor_admin', 'conveyor.queue_stats(text)', 'execute');
  ASSERT NOT pg_catalog.has_function_privilege('conveyor_enqueuer', 'conveyor.queue_stats(text)', 'execute');
END
$$;

ROLLBACK;
