-- Verify conveyor:lock_jobs on pg

BEGIN;

DO $$
BEGIN
  ASSERT pg_catalog.has_function_privilege('conveyor_worker', 'conveyor.lock_jobs(text[], integer, integer, bigint[])', 'execute');
  ASSERT pg_catalog.has_function_privilege('conveyor_worker', 'conveyor.lock_jobs_by_id(bigint[], text[], bigint[])', 'execute');
  ASSERT pg_catalog.has_function_privilege('conveyor_worker', 'conveyor.locked_in_transaction(bigint[])', 'execute');
  ASSERT pg_catalog.has_function_privilege('conveyor_worker', 'conveyor.require_read_committed(text)', 'execute');
  ASSERT NOT pg_catalog.has_function_privilege('conveyor_enqueuer', 'conveyor.lock_jobs(text[], integer, integer, bigint[])', 'execute');
  -- The rework: a failed lock call gives back the locks it took.
  ASSERT (SELECT p.prosrc FROM pg_catalog.pg_proc AS p WHERE p.oid = 'conveyor.lock_jobs(text[], integer, integer, bigint[])'::regprocedure) LIKE '%query_canceled%';
  ASSERT (SELECT p.prosrc FROM pg_catalog.pg_proc AS p WHERE p.oid = 'conveyor.lock_jobs_by_id(bigint[], text[], bigint[])'::regprocedure) LIKE '%query_canceled%';
END
$$;

ROLLBACK;
