-- Revert conveyor:jobs from pg

BEGIN;

DROP TABLE conveyor.jobs;
DROP FUNCTION conveyor.job_limit(text);

COMMIT;
