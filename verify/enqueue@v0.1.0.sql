-- Verify conveyor:enqueue on pg

BEGIN;

DO $$
BEGIN
  ASSERT pg_catalog.has_function_privilege('conveyor_enqueuer',
    'conveyor.enqueue(text, jsonb, text, integer, timestamptz, jsonb, integer)', 'execute');
  ASSERT (SELECT prosecdef FROM pg_catalog.pg_proc
           WHERE oid = 'conveyor.enqueue(text, jsonb, text, integer, timestamptz, jsonb, integer)'::regprocedure),
    'conveyor.enqueue must be SECURITY DEFINER';
END
$$;

ROLLBACK;
