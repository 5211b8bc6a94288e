-- Revert conveyor:jobs from pg

BEGIN;

DROP TABLE conveyor.jobs;

COMMIT;
