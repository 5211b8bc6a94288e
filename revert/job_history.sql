-- Revert conveyor:job_history from pg

BEGIN;

-- Every object this change replaced gets its previous text back, exactly as
-- deploy/jobs.sql, job_stats.sql, queue_stats.sql, finish_job.sql and
-- retry_job.sql (reworked) installed it.

REVOKE ALL ON FUNCTION conveyor.job_stats() FROM conveyor_admin;
REVOKE ALL ON FUNCTION conveyor.queue_stats() FROM conveyor_admin;
REVOKE ALL ON FUNCTION conveyor.destroy_job(bigint) FROM conveyor_admin;
REVOKE ALL ON FUNCTION conveyor.job_limit(text) FROM conveyor_admin;
REVOKE ALL ON FUNCTION conveyor.job_lock_key1(bigint) FROM conveyor_admin;
REVOKE ALL ON FUNCTION conveyor.job_lock_key2(bigint) FROM conveyor_admin;
REVOKE ALL ON FUNCTION conveyor.job_lock_id(oid, oid) FROM conveyor_admin;
REVOKE ALL ON FUNCTION conveyor.sorted_array_contains(bigint[], bigint) FROM conveyor_admin;
REVOKE ALL ON FUNCTION conveyor.held_job_ids() FROM conveyor_admin;
REVOKE ALL ON FUNCTION conveyor.working_job_ids() FROM conveyor_admin;
REVOKE ALL ON FUNCTION conveyor.release_job_locks(bigint[], bigint[]) FROM conveyor_admin;
REVOKE ALL ON FUNCTION conveyor.resolve_jobs(text, bigint[], bigint[]) FROM conveyor_admin;

DROP FUNCTION conveyor.cleanup(interval, interval, integer, integer);
DROP FUNCTION conveyor.discard_jobs_where(text, text, text, text, timestamptz, text);
DROP FUNCTION conveyor.retry_jobs_where(text, text, text, text, timestamptz);
DROP FUNCTION conveyor.jobs_where_check(text, text, text[]);
DROP FUNCTION conveyor.reschedule_job(bigint, timestamptz);
DROP FUNCTION conveyor.discard_job(bigint, text);
DROP FUNCTION conveyor.retry_now(bigint);
DROP FUNCTION conveyor.manage_job(bigint, text);
DROP FUNCTION conveyor.list_jobs(text, text, text, text, bigint, integer);

DROP FUNCTION conveyor.retry_job(bigint, text, text, double precision, boolean, timestamptz, text);

CREATE FUNCTION conveyor.retry_job(
  id bigint,
  error_message text DEFAULT NULL,
  error_backtrace text DEFAULT NULL,
  delay double precision DEFAULT NULL,
  expire boolean DEFAULT false
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
  ELSIF retry_job.expire IS NULL THEN
    RAISE EXCEPTION 'conveyor.retry_job: expire must be true or false, not NULL'
      USING ERRCODE = '22004';
  END IF;

  -- The backoff is Que's: error_count^4 + 3 seconds after the error_count-th
  -- error (4 s, 19 s, 84 s, 259 s ...). Past maximum_retry_count, or when
  -- the caller gives up (expire), the job is expired instead and keeps its
  -- run_at.
  RETURN QUERY
  UPDATE conveyor.jobs AS j
     SET error_count = j.error_count + 1,
         last_error_message = left(retry_job.error_message, conveyor.job_limit('last_error_message')),
         last_error_backtrace = left(retry_job.error_backtrace, conveyor.job_limit('last_error_backtrace')),
         run_at = CASE WHEN retry_job.expire OR j.error_count + 1 > j.maximum_retry_count THEN j.run_at
                       ELSE now() + make_interval(secs => coalesce(retry_job.delay, (j.error_count + 1)::double precision ^ 4 + 3))
                  END,
         expired_at = CASE WHEN retry_job.expire OR j.error_count + 1 > j.maximum_retry_count THEN now() END
   WHERE j.id = retry_job.id AND j.finished_at IS NULL AND j.expired_at IS NULL
  RETURNING j.*;

  PERFORM conveyor.release_job_locks(ARRAY[retry_job.id]);
END
$$;

COMMENT ON FUNCTION conveyor.retry_job(bigint, text, text, double precision, boolean) IS
  'Records an error on a job and schedules its next run: increments error_count, stores '
  'error_message (cut to 1,000 characters) and error_backtrace (cut to 10,000), and sets '
  'run_at = now() + delay seconds, by default error_count^4 + 3 (4, 19, 84, 259 ... seconds). '
  'When the new error_count exceeds maximum_retry_count, or when expire is true (a worker '
  'giving up on the job after an error, as Que''s expire in handle_error), the job is expired '
  'instead (expired_at = now(), run_at kept), with the error recorded all the same. Returns '
  'the updated row, or no row when the id does not exist or the job is already finished or '
  'expired. Releases the caller''s lock on the job as the resolution functions do. Errors: '
  '22023 a negative or NaN delay; 22004 a NULL expire; 22008 a delay too large for a '
  'timestamp.';

REVOKE ALL ON FUNCTION conveyor.retry_job(bigint, text, text, double precision, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION conveyor.retry_job(bigint, text, text, double precision, boolean) TO conveyor_worker;

DROP FUNCTION conveyor.finish_job(bigint, jsonb);
DROP FUNCTION conveyor.finish_jobs(bigint[], bigint[], jsonb, timestamptz[], text);

CREATE FUNCTION conveyor.finish_jobs(ids bigint[], held bigint[] DEFAULT NULL)
RETURNS SETOF bigint
LANGUAGE plpgsql  -- not SQL: see held_job_ids
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  RETURN QUERY SELECT r.id FROM conveyor.resolve_jobs('finish', finish_jobs.ids, finish_jobs.held) AS r(id);
END
$$;

COMMENT ON FUNCTION conveyor.finish_jobs(bigint[], bigint[]) IS
  'Marks the given jobs finished (finished_at = now()), keeping their rows for inspection. Returns the ids it finished; an id that does not exist or whose job is already '
  'finished or expired is skipped. Does not require the caller to hold the jobs'' locks (job code '
  'resolves its job on a connection that is not the locker''s); releases those the caller holds, '
  'safely: the jobs stay locked until the calling transaction commits. held (optional): the ids '
  'of the jobs the caller knows its session holds, as a locker that keeps count does; it saves '
  'reading pg_locks (a few hundred microseconds a call), and only locks of ids in both lists '
  'are released.';

CREATE FUNCTION conveyor.finish_job(id bigint)
RETURNS boolean
LANGUAGE plpgsql  -- not SQL: see held_job_ids
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  RETURN EXISTS (SELECT FROM conveyor.resolve_jobs('finish', ARRAY[finish_job.id]));
END
$$;

COMMENT ON FUNCTION conveyor.finish_job(bigint) IS
  'The one-job form of finish_jobs: true when it finished the job, false when the id does not '
  'exist or the job is already finished or expired.';

REVOKE ALL ON FUNCTION conveyor.finish_jobs(bigint[], bigint[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION conveyor.finish_job(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION conveyor.finish_jobs(bigint[], bigint[]) TO conveyor_worker;
GRANT EXECUTE ON FUNCTION conveyor.finish_job(bigint) TO conveyor_worker;

CREATE OR REPLACE FUNCTION conveyor.job_stats()
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

CREATE OR REPLACE FUNCTION conveyor.queue_stats()
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

DROP VIEW conveyor.jobs_view;
DROP FUNCTION conveyor.job_state(timestamptz, timestamptz, boolean, timestamptz, integer, timestamptz);
DROP FUNCTION conveyor.errors_append(jsonb, jsonb);

CREATE OR REPLACE FUNCTION conveyor.job_limit(name text)
RETURNS integer
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
RETURN CASE job_limit.name
         WHEN 'job_class' THEN 500               -- characters
         WHEN 'queue' THEN 100                   -- characters
         WHEN 'priority' THEN 32767              -- highest priority number (smallint)
         WHEN 'last_error_message' THEN 1000     -- characters kept
         WHEN 'last_error_backtrace' THEN 10000  -- characters kept
         ELSE ('conveyor.job_limit: no limit named ' || job_limit.name)::integer
       END;

COMMENT ON FUNCTION conveyor.job_limit(text) IS
  'Internal. The job limits, by name: job_class 500 and queue 100 characters, priority 32767 '
  'at most, last_error_message 1,000 and last_error_backtrace 10,000 characters kept. The one '
  'home of these numbers for the functions (inlined and folded by the planner); the table''s '
  'check constraints repeat them as literals, as a function call there would cost every insert '
  'tens of microseconds, and tests/pgtap/jobs_table.sql proves the two agree. Errors: 22P02 an '
  'unknown name.';

ALTER TABLE conveyor.jobs
  DROP COLUMN attempted_by,
  DROP COLUMN attempted_at,
  DROP COLUMN errors,
  DROP COLUMN result;

REVOKE ALL ON conveyor.lockers FROM conveyor_admin;
REVOKE ALL ON conveyor.jobs FROM conveyor_admin;
REVOKE USAGE ON SCHEMA conveyor FROM conveyor_admin;

-- Another database of this cluster may still use the role; then it stays.
DO $$
BEGIN
  DROP ROLE conveyor_admin;
EXCEPTION WHEN dependent_objects_still_exist THEN
  RAISE NOTICE 'the role conveyor_admin is still used elsewhere in this cluster; kept';
END
$$;

COMMIT;
