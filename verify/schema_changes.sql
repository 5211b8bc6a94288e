-- Verify conveyor:schema_changes on pg

BEGIN;

SELECT change, planned_at, deployed_at FROM conveyor.schema_changes WHERE false;

DO $$
BEGIN
  ASSERT NOT pg_catalog.has_table_privilege('conveyor_enqueuer', 'conveyor.schema_changes', 'select'),
    'conveyor_enqueuer may read conveyor.schema_changes';
  ASSERT NOT pg_catalog.has_table_privilege('conveyor_worker', 'conveyor.schema_changes', 'select'),
    'conveyor_worker may read conveyor.schema_changes';
END
$$;

ROLLBACK;
