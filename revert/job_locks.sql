-- Revert conveyor:job_locks from pg

BEGIN;

DROP FUNCTION conveyor.release_job_locks(bigint[], bigint[]);
DROP FUNCTION conveyor.working_job_ids();
DROP FUNCTION conveyor.held_job_ids();

COMMIT;
