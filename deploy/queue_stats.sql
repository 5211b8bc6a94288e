-- Deploy conveyor:queue_stats to pg
-- requires: job_locks

BEGIN;

CREATE FUNCTION conveyor.queue_stats()
RETURNS TABLE (
  queue text,
  ready bigint,
  scheduled bigint,
  working bigint,
  errored bigint,
  expired bigint,
  finished bigint,
  oldest_ready_age interval
)
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT j.queue,
         count(*) FILTER (WHERE j.finished_at IS NULL AND j.expired_at IS NULL AND j.run_at <= now() AND w.id IS NULL),
         count(*) FILTER (WHERE j.finished_at IS NULL AND j.expired_at IS NULL AND j.run_at > now() AND w.id IS NULL),
         count(*) FILTER (WHERE w.id IS NOT NULL),
         count(*) FILTER (WHERE j.finished_at IS NULL AND j.expired_at IS NULL AND j.error_count > 0),
         count(*) FILTER (WHERE j.expired_at IS NOT NULL),
         count(*) FILTER (WHERE j.finished_at IS NOT NULL),
         now() - min(j.run_at) FILTER (WHERE j.finished_at IS NULL AND j.expired_at IS NULL AND j.run_at <= now() AND w.id IS NULL)
    FROM conveyor.jobs AS j
    LEFT JOIN conveyor.working_job_ids() AS w(id)
      ON w.id = j.id AND j.finished_at IS NULL AND j.expired_at IS NULL
   GROUP BY j.queue
   ORDER BY j.queue;
$$;

COMMENT ON FUNCTION conveyor.queue_stats() IS
  'One row per queue: ready (ready now, not locked), scheduled (run_at in the future, not '
  'locked), working (locked by some session right now), errored (unresolved with '
  'error_count > 0), expired, finished, and oldest_ready_age (how long the oldest ready job '
  'has waited). Reads the whole table; locks nothing.';

REVOKE ALL ON FUNCTION conveyor.queue_stats() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION conveyor.queue_stats() TO conveyor_worker;

COMMIT;
