-- Revert conveyor:schema_changes from pg

BEGIN;

DROP TABLE conveyor.schema_changes;

COMMIT;
