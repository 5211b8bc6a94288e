-- Verify conveyor:lockers on pg

BEGIN;

SELECT pid, backend_start, postmaster_start, hostname, process_id, queues, worker_priorities,
       max_priority, listening, started_at
  FROM conveyor.lockers WHERE false;

DO $$
BEGIN
  ASSERT pg_catalog.to_regclass('conveyor.workers') IS NULL, 'conveyor.workers is gone';
  ASSERT pg_catalog.to_regprocedure('conveyor.register_worker(text[], integer[], text, integer, boolean)') IS NULL;
  ASSERT pg_catalog.to_regprocedure('conveyor.unregister_worker()') IS NULL;
  ASSERT pg_catalog.to_regprocedure('conveyor.prune_workers()') IS NULL;
  ASSERT pg_catalog.has_function_privilege('conveyor_worker', 'conveyor.register_locker(text[], integer[], text, integer, boolean)', 'execute');
  ASSERT pg_catalog.has_function_privilege('conveyor_worker', 'conveyor.unregister_locker()', 'execute');
  ASSERT pg_catalog.has_function_privilege('conveyor_worker', 'conveyor.prune_lockers()', 'execute');
  ASSERT NOT pg_catalog.has_function_privilege('conveyor_enqueuer', 'conveyor.register_locker(text[], integer[], text, integer, boolean)', 'execute');
  ASSERT pg_catalog.has_table_privilege('conveyor_worker', 'conveyor.lockers', 'select, insert, update, delete');
  ASSERT NOT pg_catalog.has_table_privilege('conveyor_enqueuer', 'conveyor.lockers', 'select');
  -- The trigger function reads the new table.
  ASSERT pg_catalog.strpos(pg_catalog.pg_get_functiondef('conveyor.tg_jobs__notify()'::regprocedure), 'conveyor.lockers') > 0;
  -- A registration round-trips through the new functions.
  ASSERT conveyor.register_locker('{verify}', '{NULL}') = 'conveyor_worker_' || pg_catalog.pg_backend_pid();
  ASSERT conveyor.unregister_locker();
END
$$;

ROLLBACK;
