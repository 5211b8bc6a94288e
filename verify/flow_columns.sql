-- Verify conveyor:flow_columns on pg

BEGIN;

SELECT concurrency_key, labels, batch_id FROM conveyor.jobs WHERE false;

DO $$
BEGIN
  ASSERT pg_catalog.has_function_privilege('conveyor_enqueuer',
    'conveyor.enqueue(text, jsonb, text, integer, timestamptz, jsonb, integer, text, text, text[], bigint)', 'execute');
  ASSERT (SELECT prosecdef FROM pg_catalog.pg_proc
           WHERE oid = 'conveyor.enqueue(text, jsonb, text, integer, timestamptz, jsonb, integer, text, text, text[], bigint)'::regprocedure),
    'conveyor.enqueue must be SECURITY DEFINER';
  ASSERT NOT EXISTS (SELECT FROM pg_catalog.pg_proc
                      WHERE pronamespace = 'conveyor'::regnamespace AND proname = 'enqueue' AND pronargs <> 11),
    'only the eleven-argument conveyor.enqueue may remain';
  ASSERT pg_catalog.pg_get_functiondef('conveyor.enqueue_many(jsonb)'::regprocedure) LIKE '%concurrency_key%',
    'conveyor.enqueue_many must know concurrency_key';
END
$$;

ROLLBACK;
