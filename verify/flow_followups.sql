-- Verify conveyor:flow_followups on pg

BEGIN;

SELECT conveyor.job_state(NULL, NULL, false, now(), 0, now(), true);

DO $$
BEGIN
  ASSERT conveyor.job_state(NULL, NULL, false, now(), 0, now(), true) = 'paused',
    'conveyor.job_state must know the state paused';
  ASSERT pg_catalog.pg_get_viewdef('conveyor.jobs_view'::regclass) LIKE '%job_paused%',
    'conveyor.jobs_view must compute paused';
  ASSERT pg_catalog.has_function_privilege('conveyor_admin', 'conveyor.pause(text, text, text)', 'execute');
  ASSERT pg_catalog.has_function_privilege('conveyor_admin', 'conveyor.set_concurrency_limit(text, integer, integer)', 'execute');
  ASSERT pg_catalog.has_table_privilege('conveyor_admin', 'conveyor.pauses', 'select');
  PERFORM paused FROM conveyor.queue_stats() WHERE false;
END
$$;

ROLLBACK;
