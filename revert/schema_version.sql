-- Revert conveyor:schema_version from pg

BEGIN;

DROP FUNCTION conveyor.schema_version();

COMMIT;
