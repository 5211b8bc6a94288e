-- Verify conveyor:roles on pg

BEGIN;

DO $$
BEGIN
  ASSERT pg_catalog.has_schema_privilege('conveyor_enqueuer', 'conveyor', 'usage'),
    'conveyor_enqueuer lacks usage on schema conveyor';
  ASSERT pg_catalog.has_schema_privilege('conveyor_worker', 'conveyor', 'usage'),
    'conveyor_worker lacks usage on schema conveyor';
  ASSERT pg_catalog.pg_has_role('conveyor_worker', 'conveyor_enqueuer', 'member'),
    'conveyor_worker is not a member of conveyor_enqueuer';
END
$$;

ROLLBACK;
