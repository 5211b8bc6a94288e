-- Revert conveyor:expire_job from pg

BEGIN;

DROP FUNCTION conveyor.expire_job(bigint);
DROP FUNCTION conveyor.expire_jobs(bigint[], bigint[]);

COMMIT;
