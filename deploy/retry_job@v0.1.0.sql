-- Deploy conveyor:retry_job to pg
-- requires: job_locks

BEGIN;

CREATE FUNCTION conveyor.retry_job(
  id bigint,
  error_message text DEFAULT NULL,
  error_backtrace text DEFAULT NULL,
  delay double precision DEFAULT NULL
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
  IF retry_job.delay < 0 OR retry_job.delay = 'NaN' THEN
    RAISE EXCEPTION 'conveyor.retry_job: delay must be a number of seconds >= 0, not %', retry_job.delay
      USING ERRCODE = '22023';
  END IF;

  -- The backoff is Que's: error_count^4 + 3 seconds after the error_count-th
  -- error (4 s, 19 s, 84 s, 259 s ...). Past maximum_retry_count the job is
  -- expired instead, and keeps its run_at.
  RETURN QUERY
  UPDATE conveyor.jobs AS j
     SET error_count = j.error_count + 1,
         last_error_message = left(retry_job.error_message, conveyor.job_limit('last_error_message')),
         last_error_backtrace = left(retry_job.error_backtrace, conveyor.job_limit('last_error_backtrace')),
         run_at = CASE WHEN j.error_count + 1 > j.maximum_retry_count THEN j.run_at
                       ELSE now() + make_interval(secs => coalesce(retry_job.delay, (j.error_count + 1)::double precision ^ 4 + 3))
                  END,
         expired_at = CASE WHEN j.error_count + 1 > j.maximum_retry_count THEN now() END
   WHERE j.id = retry_job.id AND j.finished_at IS NULL AND j.expired_at IS NULL
  RETURNING j.*;

  PERFORM conveyor.release_job_locks(ARRAY[retry_job.id]);
END
$$;

COMMENT ON FUNCTION conveyor.retry_job(bigint, text, text, double precision) IS
  'Records an error on a job and schedules its next run: increments error_count, stores '
  'error_message (cut to 1,000 characters) and error_backtrace (cut to 10,000), and sets '
  'run_at = now() + delay seconds, by default error_count^4 + 3 (4, 19, 84, 259 ... seconds). '
  'When the new error_count exceeds maximum_retry_count the job is expired instead. Returns '
  'the updated row, or no row when the id does not exist or the job is already finished or '
  'expired. Releases the caller''s lock on the job as the resolution functions do. Errors: '
  '22023 a negative or NaN delay; 22008 a delay too large for a timestamp.';

REVOKE ALL ON FUNCTION conveyor.retry_job(bigint, text, text, double precision) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION conveyor.retry_job(bigint, text, text, double precision) TO conveyor_worker;

COMMIT;
