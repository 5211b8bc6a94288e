-- Verify conveyor:jobs on pg

BEGIN;

SELECT id, priority, run_at, job_class, queue, args, data, error_count,
       maximum_retry_count, last_error_message, last_error_backtrace,
       finished_at, expired_at, created_at
  FROM conveyor.jobs
 WHERE false;

DO $$
BEGIN
  ASSERT (SELECT count(*) FROM pg_catalog.pg_indexes
           WHERE schemaname = 'conveyor' AND indexname = 'jobs_ready_idx') = 1,
    'index conveyor.jobs_ready_idx is missing';
  ASSERT pg_catalog.has_table_privilege('conveyor_worker', 'conveyor.jobs', 'delete'),
    'conveyor_worker cannot delete from conveyor.jobs';
  ASSERT NOT pg_catalog.has_table_privilege('conveyor_enqueuer', 'conveyor.jobs', 'select'),
    'conveyor_enqueuer can read conveyor.jobs';
  ASSERT conveyor.job_limit('job_class') = 500 AND conveyor.job_limit('queue') = 100
     AND conveyor.job_limit('priority') = 32767 AND conveyor.job_limit('last_error_message') = 1000
     AND conveyor.job_limit('last_error_backtrace') = 10000, 'conveyor.job_limit gives the documented limits';
END
$$;

ROLLBACK;
