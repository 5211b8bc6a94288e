-- Revert conveyor:enqueue from pg

BEGIN;

DROP FUNCTION conveyor.enqueue(text, jsonb, text, integer, timestamptz, jsonb, integer);
DROP FUNCTION conveyor.job_problem(text, jsonb, text, integer, timestamptz, jsonb, integer);

COMMIT;
