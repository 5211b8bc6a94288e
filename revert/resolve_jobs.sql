-- Revert conveyor:resolve_jobs from pg

BEGIN;

DROP FUNCTION conveyor.resolve_jobs(text, bigint[], bigint[]);

COMMIT;
