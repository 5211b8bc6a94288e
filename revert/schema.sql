-- Revert conveyor:schema from pg

BEGIN;

DROP SCHEMA conveyor;

COMMIT;
