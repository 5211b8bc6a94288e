-- Revert conveyor:job_stats from pg

BEGIN;

DROP FUNCTION conveyor.job_stats();

COMMIT;
