-- Verify conveyor:index_bloat on pg

BEGIN;

SELECT index_name, table_name, size_bytes, live_entries, needed_bytes, invalid
  FROM conveyor.index_bloat(0, 1) WHERE false;

DO $$
BEGIN
  ASSERT pg_catalog.has_function_privilege('conveyor_worker', 'conveyor.index_bloat(bigint, double precision)', 'execute'),
    'conveyor_worker must execute conveyor.index_bloat';
END
$$;

ROLLBACK;
