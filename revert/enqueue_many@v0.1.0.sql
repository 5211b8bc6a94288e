-- Revert conveyor:enqueue_many from pg

BEGIN;

DROP FUNCTION conveyor.enqueue_many(jsonb);
DROP FUNCTION conveyor.job_json_problem(jsonb);

COMMIT;
