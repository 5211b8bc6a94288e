-- Verify conveyor:throttles on pg

BEGIN;

SELECT key, perform_limit, enqueue_limit, perform_throttle, throttle_period, updated_at
  FROM conveyor.concurrency_limits WHERE false;
SELECT key, starts FROM conveyor.throttle_starts WHERE false;

DO $$
BEGIN
  ASSERT pg_catalog.pg_get_functiondef('conveyor.lock_jobs(text[], integer, integer, bigint[])'::regprocedure) LIKE '%try_lock_flow_job%',
    'conveyor.lock_jobs must obey throttles';
  ASSERT pg_catalog.pg_get_functiondef('conveyor.lock_jobs_by_id(bigint[], text[], bigint[])'::regprocedure) LIKE '%try_lock_flow_job%',
    'conveyor.lock_jobs_by_id must obey throttles';
  ASSERT pg_catalog.has_function_privilege('conveyor_worker', 'conveyor.take_throttle_slot(text, integer, interval)', 'execute');
  ASSERT pg_catalog.has_function_privilege('conveyor_admin', 'conveyor.set_concurrency_limit(text, integer, integer, integer, interval)', 'execute');
  ASSERT NOT pg_catalog.has_function_privilege('conveyor_worker', 'conveyor.set_concurrency_limit(text, integer, integer, integer, interval)', 'execute');
  ASSERT NOT pg_catalog.has_table_privilege('conveyor_worker', 'conveyor.throttle_starts', 'update');
  ASSERT (SELECT attstorage FROM pg_catalog.pg_attribute
           WHERE attrelid = 'conveyor.throttle_starts'::regclass AND attname = 'starts') = 'e',
    'throttle_starts.starts must be stored uncompressed (STORAGE EXTERNAL)';
END
$$;

ROLLBACK;
