-- Revert conveyor:job_locks from pg

BEGIN;

DROP FUNCTION conveyor.release_job_locks(bigint[], bigint[]);
DROP FUNCTION conveyor.working_job_ids();
DROP FUNCTION conveyor.held_job_ids();
DROP FUNCTION conveyor.sorted_array_contains(bigint[], bigint);
DROP FUNCTION conveyor.job_lock_id(oid, oid);
DROP FUNCTION conveyor.job_lock_key2(bigint);
DROP FUNCTION conveyor.job_lock_key1(bigint);

COMMIT;
