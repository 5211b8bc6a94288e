-- Deploy conveyor:schema_version to pg
-- requires: schema

BEGIN;

CREATE FUNCTION conveyor.schema_version()
RETURNS text
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT '0.1.0'::text;
$$;

COMMENT ON FUNCTION conveyor.schema_version() IS
  'The version of the installed conveyor schema (the sqitch tag it was released as). '
  '`conveyor migrate` compares it with the version bundled in the Python package.';

GRANT EXECUTE ON FUNCTION conveyor.schema_version() TO PUBLIC;

COMMIT;
