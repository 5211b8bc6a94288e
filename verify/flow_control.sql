-- Verify conveyor:flow_control on pg

BEGIN;

SELECT id, queue, job_class, label, paused_at FROM conveyor.pauses WHERE false;
SELECT key, perform_limit, enqueue_limit, updated_at FROM conveyor.concurrency_limits WHERE false;

DO $$
BEGIN
  ASSERT pg_catalog.pg_get_functiondef('conveyor.lock_jobs(text[], integer, integer, bigint[])'::regprocedure) LIKE '%try_lock_limited_job%',
    'conveyor.lock_jobs must enforce perform limits';
  ASSERT pg_catalog.pg_get_functiondef('conveyor.lock_jobs_by_id(bigint[], text[], bigint[])'::regprocedure) LIKE '%job_paused%',
    'conveyor.lock_jobs_by_id must obey pauses';
  ASSERT pg_catalog.has_function_privilege('conveyor_worker', 'conveyor.try_lock_limited_job(bigint, text, integer)', 'execute');
  ASSERT NOT pg_catalog.has_function_privilege('conveyor_worker', 'conveyor.pause(text, text, text)', 'execute');
END
$$;

ROLLBACK;
