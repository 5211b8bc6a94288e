-- Revert conveyor:finish_job from pg

BEGIN;

DROP FUNCTION conveyor.finish_job(bigint);
DROP FUNCTION conveyor.finish_jobs(bigint[], bigint[]);

COMMIT;
