-- Verify conveyor:locker_buffer on pg

BEGIN;

SELECT buffer_size, maximum_buffer_size, reported_at FROM conveyor.lockers WHERE false;

DO $$
BEGIN
  ASSERT pg_catalog.has_function_privilege('conveyor_worker', 'conveyor.report_locker(integer, integer)', 'execute'),
    'conveyor_worker must execute conveyor.report_locker';
END
$$;

ROLLBACK;
