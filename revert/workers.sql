-- Revert conveyor:workers from pg

BEGIN;

DROP TABLE conveyor.workers;

COMMIT;
