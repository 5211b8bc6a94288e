-- Verify conveyor:job_history on pg

BEGIN;

SELECT result, errors, attempted_at, attempted_by FROM conveyor.jobs WHERE false;
SELECT state, locked_by FROM conveyor.jobs_view WHERE false;
SELECT pg_catalog.has_function_privilege('conveyor.list_jobs(text, text, text, text, bigint, integer)', 'execute');
SELECT pg_catalog.has_function_privilege('conveyor.retry_now(bigint)', 'execute');
SELECT pg_catalog.has_function_privilege('conveyor.discard_job(bigint, text)', 'execute');
SELECT pg_catalog.has_function_privilege('conveyor.reschedule_job(bigint, timestamptz)', 'execute');
SELECT pg_catalog.has_function_privilege('conveyor.retry_jobs_where(text, text, text, text, timestamptz)', 'execute');
SELECT pg_catalog.has_function_privilege('conveyor.discard_jobs_where(text, text, text, text, timestamptz, text)', 'execute');
SELECT pg_catalog.has_function_privilege('conveyor.cleanup(interval, interval, integer, integer)', 'execute');
SELECT pg_catalog.has_function_privilege('conveyor.finish_job(bigint, jsonb)', 'execute');
SELECT pg_catalog.has_function_privilege('conveyor.finish_jobs(bigint[], bigint[], jsonb, timestamptz[], text)', 'execute');
SELECT pg_catalog.has_function_privilege('conveyor.retry_job(bigint, text, text, double precision, boolean, timestamptz, text)', 'execute');

DO $$
BEGIN
  ASSERT (SELECT count(*) FROM pg_catalog.pg_roles WHERE rolname = 'conveyor_admin') = 1,
    'the role conveyor_admin must exist';
END
$$;

ROLLBACK;
