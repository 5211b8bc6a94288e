-- Verify conveyor:schedules on pg

BEGIN;

SELECT name, cron, time_zone, job_class, args, queue, priority, data, enabled, catch_up,
       last_run_at, next_run_at, created_at, updated_at
  FROM conveyor.schedules WHERE false;

DO $$
BEGIN
  ASSERT pg_catalog.has_function_privilege('conveyor_worker', 'conveyor.enqueue_due_schedules()', 'execute');
  ASSERT pg_catalog.has_function_privilege('conveyor_worker', 'conveyor.next_schedule_at()', 'execute');
  ASSERT NOT pg_catalog.has_function_privilege('conveyor_worker',
    'conveyor.set_schedule(text, text, text, jsonb, text, integer, jsonb, text, boolean, boolean)', 'execute');
  ASSERT NOT pg_catalog.has_function_privilege('conveyor_worker',
    'conveyor.enqueue_schedules_due_at(timestamptz)', 'execute');
  ASSERT (SELECT prosecdef FROM pg_catalog.pg_proc
           WHERE oid = 'conveyor.enqueue_due_schedules()'::regprocedure),
    'conveyor.enqueue_due_schedules must be SECURITY DEFINER';
END
$$;

ROLLBACK;
