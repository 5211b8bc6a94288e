-- Revert conveyor:unlock_jobs from pg

BEGIN;

DROP FUNCTION conveyor.unlock_jobs(bigint[], bigint[]);

COMMIT;
