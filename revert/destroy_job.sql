-- Revert conveyor:destroy_job from pg

BEGIN;

DROP FUNCTION conveyor.destroy_job(bigint);
DROP FUNCTION conveyor.destroy_jobs(bigint[], bigint[]);

COMMIT;
