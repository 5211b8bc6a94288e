-- Verify conveyor:register_worker on pg

BEGIN;

DO $$
BEGIN
  ASSERT pg_catalog.has_function_privilege('conveyor_worker', 'conveyor.register_worker(text[], integer[], text, integer, boolean)', 'execute');
  ASSERT pg_catalog.has_function_privilege('conveyor_worker', 'conveyor.unregister_worker()', 'execute');
  ASSERT pg_catalog.has_function_privilege('conveyor_worker', 'conveyor.prune_workers()', 'execute');
  ASSERT NOT pg_catalog.has_function_privilege('conveyor_enqueuer', 'conveyor.register_worker(text[], integer[], text, integer, boolean)', 'execute');
END
$$;

ROLLBACK;
