-- Revert conveyor:lock_jobs from pg

BEGIN;

DROP FUNCTION conveyor.lock_jobs_by_id(bigint[], text[], bigint[]);
DROP FUNCTION conveyor.lock_jobs(text[], integer, integer, bigint[]);
DROP FUNCTION conveyor.locked_in_transaction(bigint[]);
DROP FUNCTION conveyor.recheck_locked_jobs(bigint[], integer);
DROP FUNCTION conveyor.require_read_committed(text);

COMMIT;
