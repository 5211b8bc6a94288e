-- Verify conveyor:resolve_jobs on pg

BEGIN;

DO $$
BEGIN
  ASSERT pg_catalog.has_function_privilege('conveyor_worker', 'conveyor.resolve_jobs(text, bigint[], bigint[])', 'execute');
  ASSERT NOT pg_catalog.has_function_privilege('conveyor_enqueuer', 'conveyor.resolve_jobs(text, bigint[], bigint[])', 'execute');
  -- No id, no row touched: each action runs its statement.
  ASSERT NOT EXISTS (SELECT FROM conveyor.resolve_jobs('finish', '{}'));
  ASSERT NOT EXISTS (SELECT FROM conveyor.resolve_jobs('expire', '{}'));
  ASSERT NOT EXISTS (SELECT FROM conveyor.resolve_jobs('destroy', '{}'));
END
$$;

ROLLBACK;
