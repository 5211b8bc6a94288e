-- Verify conveyor:enqueue on pg

BEGIN;

DO $$
BEGIN
  ASSERT pg_catalog.has_function_privilege('conveyor_enqueuer',
    'conveyor.enqueue(text, jsonb, text, integer, timestamptz, jsonb, integer, text)', 'execute');
  ASSERT (SELECT prosecdef FROM pg_catalog.pg_proc
           WHERE oid = 'conveyor.enqueue(text, jsonb, text, integer, timestamptz, jsonb, integer, text)'::regprocedure),
    'conveyor.enqueue must be SECURITY DEFINER';
  ASSERT NOT EXISTS (SELECT FROM pg_catalog.pg_proc
                      WHERE pronamespace = 'conveyor'::regnamespace AND proname = 'enqueue' AND pronargs = 7),
    'the released seven-argument conveyor.enqueue must be gone';
END
$$;

ROLLBACK;
