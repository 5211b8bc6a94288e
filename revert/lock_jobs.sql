-- Revert conveyor:lock_jobs from pg

BEGIN;

DROP FUNCTION conveyor.lock_jobs_by_id(bigint[], text[]);
DROP FUNCTION conveyor.lock_jobs(text[], integer, integer);
DROP FUNCTION conveyor.recheck_locked_jobs(bigint[], integer);

COMMIT;
