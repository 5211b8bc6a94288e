-- Deploy conveyor:job_stats to pg
-- requires: job_locks

BEGIN;

CREATE FUNCTION conveyor.job_stats()
RETURNS TABLE (
  job_class text,
  count bigint,
  count_working bigint,
  count_errored bigint,
  highest_error_count integer,
  oldest_run_at timestamptz
)
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT j.job_class,
         count(*),
         count(*) FILTER (WHERE w.id IS NOT NULL),
         count(*) FILTER (WHERE j.error_count > 0),
         max(j.error_count),
         min(j.run_at)
    FROM conveyor.jobs AS j
    LEFT JOIN conveyor.working_job_ids() AS w(id) ON w.id = j.id
   WHERE j.finished_at IS NULL AND j.expired_at IS NULL
   GROUP BY j.job_class
   ORDER BY count(*) DESC, j.job_class;
$$;

COMMENT ON FUNCTION conveyor.job_stats() IS
  'Que''s job_stats: one row per job_class among unresolved jobs (neither finished nor expired), '
  'most numerous first: count, count_working (jobs some session holds the lock of right now, '
  'from pg_locks), count_errored (error_count > 0), highest_error_count, oldest_run_at. '
  'Reads the whole unresolved part of the table; locks nothing.';

REVOKE ALL ON FUNCTION conveyor.job_stats() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION conveyor.job_stats() TO conveyor_worker;

COMMIT;
