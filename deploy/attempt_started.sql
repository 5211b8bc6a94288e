-- Deploy conveyor:attempt_started to pg
-- requires: job_history

BEGIN;

-- A running attempt's start, for readers of a running job (the Django task
-- backend's TaskResult.started_at). Locking a job writes nothing, so until
-- now attempted_at/attempted_by were written only when an attempt was
-- resolved: a worker whose jobs' readers need the start calls start_attempt
-- when the job begins (one UPDATE); the others are unchanged.

CREATE FUNCTION conveyor.start_attempt(
  id bigint,
  attempted_at timestamptz DEFAULT NULL,
  attempted_by text DEFAULT NULL
)
RETURNS SETOF conveyor.jobs
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
-- Plans once per session that never scan the jobs table: see deploy/lock_jobs.sql.
SET enable_seqscan = off
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
  -- Only attempted_at and attempted_by change: no trigger fires (the batch
  -- triggers watch finished_at and expired_at), no index column changes.
  RETURN QUERY
  UPDATE conveyor.jobs AS j
     SET attempted_at = coalesce(start_attempt.attempted_at, now()),
         attempted_by = start_attempt.attempted_by
   WHERE j.id = start_attempt.id AND j.finished_at IS NULL AND j.expired_at IS NULL
  RETURNING j.*;
END
$$;

COMMENT ON FUNCTION conveyor.start_attempt(bigint, timestamptz, text) IS
  'Records that an attempt at the job has started: sets attempted_at (default now()) and '
  'attempted_by (the worker, host:pid) of an unfinished, unexpired job, so that jobs_view shows '
  'a running job''s start; the attempt''s resolution (finish_jobs, retry_job with attempted_at '
  'and attempted_by) sets them again. Optional: a worker that does not call it leaves them as '
  'the latest resolved attempt''s. Writes the row (one UPDATE) where locking writes nothing, so '
  'a worker calls it only for jobs whose readers need the start. Returns the updated row, or no '
  'row when the id does not exist or the job is already finished or expired. Does not require '
  'the caller to hold the job''s lock; locks only the row.';

COMMENT ON COLUMN conveyor.jobs.attempted_at IS
  'When the latest attempt started, as the worker reported it: when it was resolved, or when it '
  'started for workers that call start_attempt (NULL: never worked, or not reported).';
COMMENT ON COLUMN conveyor.jobs.attempted_by IS
  'The worker that made the latest attempt (reported as attempted_at is): host:pid of its '
  'process (NULL when unknown).';

REVOKE ALL ON FUNCTION conveyor.start_attempt(bigint, timestamptz, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION conveyor.start_attempt(bigint, timestamptz, text) TO conveyor_worker;

COMMIT;
