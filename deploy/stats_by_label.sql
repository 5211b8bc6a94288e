-- Deploy conveyor:stats_by_label to pg
-- requires: flow_followups

BEGIN;

-- job_stats and queue_stats of the jobs carrying a label: overloads with one
-- parameter, so that the released job_stats() and queue_stats() keep their
-- signatures (and their callers' grants and checks) unchanged. The same
-- queries as theirs, over the jobs whose labels contain the label (a GIN
-- index would serve the test, but the stats read the unresolved jobs
-- anyway).

CREATE FUNCTION conveyor.job_stats(label text)
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
  SELECT v.job_class,
         count(*),
         count(*) FILTER (WHERE v.state = 'running'),
         count(*) FILTER (WHERE v.error_count > 0),
         max(v.error_count),
         min(v.run_at)
    FROM conveyor.jobs_view AS v
    JOIN conveyor.jobs AS j ON j.id = v.id
   WHERE v.finished_at IS NULL AND v.expired_at IS NULL
     AND job_stats.label = ANY (j.labels)
   GROUP BY v.job_class
   ORDER BY count(*) DESC, v.job_class;
$$;

COMMENT ON FUNCTION conveyor.job_stats(text) IS
  'job_stats() of the unresolved jobs carrying the label (one of their labels): one row per '
  'job_class, most numerous first, with the same columns. A NULL label matches no job. Reads '
  'the whole unresolved part of the table; locks nothing.';

CREATE FUNCTION conveyor.queue_stats(label text)
RETURNS TABLE (
  queue text,
  ready bigint,
  scheduled bigint,
  working bigint,
  errored bigint,
  expired bigint,
  finished bigint,
  oldest_ready_age interval,
  paused bigint
)
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT v.queue,
         count(*) FILTER (WHERE v.state = 'ready'),
         count(*) FILTER (WHERE v.state IN ('scheduled', 'retrying')),
         count(*) FILTER (WHERE v.state = 'running'),
         count(*) FILTER (WHERE v.state NOT IN ('finished', 'expired') AND v.error_count > 0),
         count(*) FILTER (WHERE v.state = 'expired'),
         count(*) FILTER (WHERE v.state = 'finished'),
         now() - min(v.run_at) FILTER (WHERE v.state = 'ready'),
         count(*) FILTER (WHERE v.state = 'paused')
    FROM conveyor.jobs_view AS v
    JOIN conveyor.jobs AS j ON j.id = v.id
   WHERE queue_stats.label = ANY (j.labels)
   GROUP BY v.queue
   ORDER BY v.queue;
$$;

COMMENT ON FUNCTION conveyor.queue_stats(text) IS
  'queue_stats() of the jobs carrying the label (one of their labels): one row per queue with '
  'the same columns (ready, scheduled, working, errored, expired, finished, oldest_ready_age, '
  'paused). A NULL label matches no job. Reads the whole table; locks nothing.';

REVOKE ALL ON FUNCTION conveyor.job_stats(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION conveyor.queue_stats(text) FROM PUBLIC;
-- Those of job_stats() and queue_stats().
GRANT EXECUTE ON FUNCTION conveyor.job_stats(text) TO conveyor_worker, conveyor_admin;
GRANT EXECUTE ON FUNCTION conveyor.queue_stats(text) TO conveyor_worker, conveyor_admin;

COMMIT;
