-- Verify conveyor:batches on pg

BEGIN;

SELECT id, description, on_finish, on_success, on_discard, properties, created_at, closed_at,
       finished_at, discarded_at, finished_count, expired_count, destroyed_count,
       on_finish_job_id, on_success_job_id, on_discard_job_id
  FROM conveyor.batches WHERE false;

DO $$
BEGIN
  ASSERT has_function_privilege('conveyor_enqueuer', 'conveyor.create_batch(text, jsonb, jsonb, jsonb, jsonb)', 'execute'),
    'conveyor_enqueuer must be able to execute conveyor.create_batch';
  ASSERT has_function_privilege('conveyor_enqueuer', 'conveyor.close_batch(bigint)', 'execute'),
    'conveyor_enqueuer must be able to execute conveyor.close_batch';
  ASSERT has_function_privilege('conveyor_enqueuer', 'conveyor.batch_stats(bigint)', 'execute'),
    'conveyor_enqueuer must be able to execute conveyor.batch_stats';
  ASSERT (SELECT count(*) FROM pg_catalog.pg_trigger
           WHERE tgrelid = 'conveyor.jobs'::regclass
             AND tgname IN ('_100_join_batch', '_200_resolve_in_batch', '_200_destroy_in_batch')) = 3,
    'the three batch triggers must exist on conveyor.jobs';
END
$$;

ROLLBACK;
