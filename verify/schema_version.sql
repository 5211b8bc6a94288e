-- Verify conveyor:schema_version on pg

BEGIN;

DO $$
BEGIN
  ASSERT conveyor.schema_version() ~ '^\d+\.\d+\.\d+$', 'conveyor.schema_version() is not a version';
END
$$;

ROLLBACK;
