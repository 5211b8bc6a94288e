-- Verify conveyor:queue_stats on pg

BEGIN;

SELECT queue, ready, scheduled, working, errored, expired, finished, oldest_ready_age
  FROM conveyor.queue_stats()
 WHERE false;

DO $$
BEGIN
  ASSERT pg_catalog.has_function_privilege('conveyor_worker', 'conveyor.queue_stats()', 'execute');
END
$$;

ROLLBACK;
