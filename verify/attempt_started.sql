-- Verify conveyor:attempt_started on pg

BEGIN;

SELECT id FROM conveyor.start_attempt(NULL::bigint, NULL, NULL) WHERE false;

DO $$
BEGIN
  ASSERT pg_catalog.has_function_privilege('conveyor_worker', 'conveyor.start_attempt(bigint, timestamptz, text)', 'execute'),
    'conveyor_worker must be able to execute conveyor.start_attempt';
  ASSERT NOT pg_catalog.has_function_privilege('conveyor_enqueuer', 'conveyor.start_attempt(bigint, timestamptz, text)', 'execute'),
    'conveyor_enqueuer must not execute conveyor.start_attempt';
END
$$;

ROLLBACK;
