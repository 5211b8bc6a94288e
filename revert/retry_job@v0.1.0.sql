-- Revert conveyor:retry_job from pg

BEGIN;

DROP FUNCTION conveyor.retry_job(bigint, text, text, double precision);

COMMIT;
