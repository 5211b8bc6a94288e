-- Verify conveyor:enqueue_many on pg

BEGIN;

DO $$
BEGIN
  ASSERT pg_catalog.has_function_privilege('conveyor_enqueuer', 'conveyor.enqueue_many(jsonb)', 'execute');
  ASSERT NOT pg_catalog.has_function_privilege('conveyor_enqueuer', 'conveyor.job_json_problem(jsonb)', 'execute');
  ASSERT pg_catalog.pg_get_functiondef('conveyor.enqueue_many(jsonb)'::regprocedure) LIKE '%unique_key%',
    'conveyor.enqueue_many must know unique_key';
END
$$;

ROLLBACK;
