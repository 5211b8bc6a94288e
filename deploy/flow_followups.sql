-- Deploy conveyor:flow_followups to pg
-- requires: flow_control
-- requires: job_history
-- requires: batches

BEGIN;

-- Follow-ups of flow control on the merged tree: the operator role
-- (conveyor_admin) may pause, resume and set concurrency limits; the one
-- state definition (job_state, jobs_view) gains paused.

-- --- the operator role runs flow control -----------------------------------------
-- pause, resume, set_concurrency_limit and delete_concurrency_limit are
-- SECURITY INVOKER: conveyor_admin gets what their statements touch.
GRANT SELECT, INSERT, DELETE ON conveyor.pauses TO conveyor_admin;
GRANT SELECT, INSERT, UPDATE, DELETE ON conveyor.concurrency_limits TO conveyor_admin;
GRANT EXECUTE ON FUNCTION conveyor.pause(text, text, text) TO conveyor_admin;
GRANT EXECUTE ON FUNCTION conveyor.resume(text, text, text) TO conveyor_admin;
GRANT EXECUTE ON FUNCTION conveyor.check_pause_names(text, text, text, text) TO conveyor_admin;
GRANT EXECUTE ON FUNCTION conveyor.set_concurrency_limit(text, integer, integer) TO conveyor_admin;
GRANT EXECUTE ON FUNCTION conveyor.delete_concurrency_limit(text) TO conveyor_admin;
GRANT EXECUTE ON FUNCTION conveyor.concurrency_limit_for(text) TO conveyor_admin;
-- jobs_view calls job_paused as its reader.
GRANT EXECUTE ON FUNCTION conveyor.job_paused(conveyor.pauses[], text, text, text[]) TO conveyor_admin;

-- --- the state paused ---------------------------------------------------------------
CREATE FUNCTION conveyor.job_state(
  finished_at timestamptz, expired_at timestamptz, locked boolean,
  run_at timestamptz, error_count integer, as_of timestamptz, paused boolean)
RETURNS text
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
RETURN CASE WHEN job_state.finished_at IS NOT NULL THEN 'finished'
            WHEN job_state.expired_at IS NOT NULL THEN 'expired'
            WHEN job_state.locked THEN 'running'
            WHEN job_state.paused THEN 'paused'
            WHEN job_state.run_at > job_state.as_of AND job_state.error_count > 0 THEN 'retrying'
            WHEN job_state.run_at > job_state.as_of THEN 'scheduled'
            ELSE 'ready'
       END;

COMMENT ON FUNCTION conveyor.job_state(timestamptz, timestamptz, boolean, timestamptz, integer, timestamptz, boolean) IS
  'Internal. The one definition of a job''s state, first match wins: finished (finished_at '
  'set), expired (expired_at set), running (locked: some session holds the job''s advisory '
  'lock), paused (paused: a row of conveyor.pauses matches the job; lock_jobs will not lock '
  'it), retrying (run_at in the future after an error), scheduled (run_at in the future), '
  'ready (run_at <= as_of, the caller''s now()). jobs_view, list_jobs, job_stats, queue_stats '
  'and the management functions all use it. Inlined by the planner.';

-- The six-argument form, for callers that know the job is not paused: the
-- same definition (one CASE, above), inlined.
CREATE OR REPLACE FUNCTION conveyor.job_state(
  finished_at timestamptz, expired_at timestamptz, locked boolean,
  run_at timestamptz, error_count integer, as_of timestamptz)
RETURNS text
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
RETURN conveyor.job_state(job_state.finished_at, job_state.expired_at, job_state.locked,
                          job_state.run_at, job_state.error_count, job_state.as_of, false);

COMMENT ON FUNCTION conveyor.job_state(timestamptz, timestamptz, boolean, timestamptz, integer, timestamptz) IS
  'Internal. job_state(..., paused => false): the state of a job no pause matches.';

REVOKE ALL ON FUNCTION conveyor.job_state(timestamptz, timestamptz, boolean, timestamptz, integer, timestamptz, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION conveyor.job_state(timestamptz, timestamptz, boolean, timestamptz, integer, timestamptz, boolean) TO conveyor_worker, conveyor_admin;

CREATE OR REPLACE VIEW conveyor.jobs_view AS
SELECT j.id, j.priority, j.run_at, j.job_class, j.queue, j.args, j.data, j.error_count,
       j.maximum_retry_count, j.last_error_message, j.last_error_backtrace, j.finished_at,
       j.expired_at, j.created_at, j.unique_key, j.result, j.errors, j.attempted_at,
       j.attempted_by,
       conveyor.job_state(j.finished_at, j.expired_at, w.pid IS NOT NULL, j.run_at, j.error_count, pg_catalog.now(),
                          -- paused: a pause naming one queue, class or label is one array
                          -- test; only pauses naming two or more cost a call, and only for
                          -- unresolved, idle jobs (job_state tests it after finished,
                          -- expired and running).
                          p.queues IS NOT NULL
                          AND (j.queue = ANY (p.queues) OR j.job_class = ANY (p.classes) OR j.labels && p.labels
                               OR (p.others IS NOT NULL AND conveyor.job_paused(p.others, j.queue, j.job_class, j.labels)))) AS state,
       w.pid AS locked_by
  FROM conveyor.jobs AS j
  LEFT JOIN (SELECT conveyor.job_lock_id(l.classid, l.objid) AS id, min(l.pid) AS pid
               FROM pg_catalog.pg_locks AS l
              WHERE l.locktype = 'advisory'
                AND l.objsubid = 2
                AND l.granted
                AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d
                                   WHERE d.datname = pg_catalog.current_database())
                AND conveyor.job_lock_id(l.classid, l.objid) IS NOT NULL
              GROUP BY 1) AS w
    ON w.id = j.id
  -- The pauses, read once per query into one row (they are few), so that no
  -- row runs a subquery over conveyor.pauses.
  -- queues is NULL when nothing is paused: one test a row, then.
  CROSS JOIN (SELECT CASE WHEN count(*) > 0 THEN coalesce(array_agg(ps.queue) FILTER (WHERE ps.job_class IS NULL AND ps.label IS NULL), '{}') END AS queues,
                     coalesce(array_agg(ps.job_class) FILTER (WHERE ps.queue IS NULL AND ps.label IS NULL), '{}') AS classes,
                     coalesce(array_agg(ps.label) FILTER (WHERE ps.queue IS NULL AND ps.job_class IS NULL), '{}') AS labels,
                     array_agg(ps) FILTER (WHERE num_nonnulls(ps.queue, ps.job_class, ps.label) > 1) AS others
                FROM conveyor.pauses AS ps) AS p;

COMMENT ON VIEW conveyor.jobs_view IS
  'Every job with its state computed one way (job_state): finished, expired, running, '
  'paused (matched by a row of conveyor.pauses), retrying, scheduled or ready; clients treat an unknown state as an opaque string. '
  'locked_by: the pid of the session holding the job''s advisory lock (NULL if none); a job '
  'waiting in a worker''s buffer is locked, so it counts as running. Reads pg_locks once per '
  'query; locks nothing.';
COMMENT ON COLUMN conveyor.jobs_view.state IS
  'finished, expired, running, paused, retrying, scheduled or ready (conveyor.job_state).';
COMMENT ON COLUMN conveyor.jobs_view.locked_by IS
  'The pid of the session holding the job''s advisory lock, or NULL.';

CREATE OR REPLACE FUNCTION conveyor.retry_jobs_where(
  state text DEFAULT NULL,
  queue text DEFAULT NULL,
  job_class text DEFAULT NULL,
  error_like text DEFAULT NULL,
  since timestamptz DEFAULT NULL
)
RETURNS bigint
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_states text[] := ARRAY['expired', 'retrying', 'scheduled'];
  v_count bigint;
BEGIN
  PERFORM conveyor.jobs_where_check('retry_jobs_where', retry_jobs_where.state, v_states || ARRAY['ready', 'paused']);
  WITH chosen AS (
    SELECT v.id
      FROM conveyor.jobs_view AS v
     WHERE v.state = ANY (CASE WHEN retry_jobs_where.state IS NULL THEN v_states ELSE ARRAY[retry_jobs_where.state] END)
       AND (retry_jobs_where.queue IS NULL OR v.queue = retry_jobs_where.queue)
       AND (retry_jobs_where.job_class IS NULL OR v.job_class = retry_jobs_where.job_class)
       AND (retry_jobs_where.error_like IS NULL OR v.last_error_message ILIKE retry_jobs_where.error_like)
       AND (retry_jobs_where.since IS NULL OR v.created_at >= retry_jobs_where.since)
  ), done AS (
    UPDATE conveyor.jobs AS j
       SET run_at = now(), expired_at = NULL
      FROM chosen
     WHERE j.id = chosen.id AND j.finished_at IS NULL
    RETURNING j.id
  )
  SELECT count(*) INTO v_count FROM done;
  RETURN v_count;
EXCEPTION WHEN unique_violation THEN
  RAISE EXCEPTION 'conveyor.retry_jobs_where: an expired job''s unique_key is held by another unresolved job (%)', SQLERRM
    USING ERRCODE = '23505',
          HINT = 'Narrow the filter, or retry those jobs one by one with conveyor.retry_now.';
END
$$;

COMMENT ON FUNCTION conveyor.retry_jobs_where(text, text, text, text, timestamptz) IS
  'retry_now for every job matching all the given filters (NULL: any): state (expired, '
  'retrying or scheduled; NULL means those three; ready and paused are allowed too: a paused '
  'job retried stays paused until resumed), queue and job_class '
  '(exact), error_like (an ILIKE pattern on last_error_message), since (created_at >= since). '
  'Jobs being worked are skipped. Returns how many jobs it made ready. One statement, without '
  'a lock per job, for any number of jobs. Errors: 22023 another state; 23505 an expired job '
  'whose unique_key another unresolved job holds (nothing is changed).';

CREATE OR REPLACE FUNCTION conveyor.discard_jobs_where(
  state text DEFAULT NULL,
  queue text DEFAULT NULL,
  job_class text DEFAULT NULL,
  error_like text DEFAULT NULL,
  since timestamptz DEFAULT NULL,
  reason text DEFAULT 'discarded by an operator'
)
RETURNS bigint
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_states text[] := ARRAY['ready', 'paused', 'retrying', 'scheduled'];
  v_count bigint;
BEGIN
  PERFORM conveyor.jobs_where_check('discard_jobs_where', discard_jobs_where.state, v_states);
  IF discard_jobs_where.reason IS NULL THEN
    RAISE EXCEPTION 'conveyor.discard_jobs_where: reason must not be NULL' USING ERRCODE = '22004';
  END IF;
  WITH chosen AS (
    SELECT v.id
      FROM conveyor.jobs_view AS v
     WHERE v.state = ANY (CASE WHEN discard_jobs_where.state IS NULL THEN v_states ELSE ARRAY[discard_jobs_where.state] END)
       AND (discard_jobs_where.queue IS NULL OR v.queue = discard_jobs_where.queue)
       AND (discard_jobs_where.job_class IS NULL OR v.job_class = discard_jobs_where.job_class)
       AND (discard_jobs_where.error_like IS NULL OR v.last_error_message ILIKE discard_jobs_where.error_like)
       AND (discard_jobs_where.since IS NULL OR v.created_at >= discard_jobs_where.since)
  ), done AS (
    UPDATE conveyor.jobs AS j
       SET expired_at = now(),
           last_error_message = left(discard_jobs_where.reason, conveyor.job_limit('last_error_message')),
           last_error_backtrace = NULL,
           errors = conveyor.errors_append(j.errors, jsonb_build_object(
                      'attempt', j.error_count,
                      'at', now(),
                      'message', left(discard_jobs_where.reason, conveyor.job_limit('last_error_message')),
                      'backtrace', NULL,
                      'worker', NULL,
                      'operator', session_user))
      FROM chosen
     WHERE j.id = chosen.id AND j.finished_at IS NULL AND j.expired_at IS NULL
    RETURNING j.id
  )
  SELECT count(*) INTO v_count FROM done;
  RETURN v_count;
END
$$;

COMMENT ON FUNCTION conveyor.discard_jobs_where(text, text, text, text, timestamptz, text) IS
  'discard_job for every job matching all the given filters (NULL: any): state (ready, '
  'paused, retrying or scheduled; NULL means those four), queue, job_class, error_like, since, as '
  'retry_jobs_where; reason as discard_job. Jobs being worked when the filter is read are '
  'skipped; a ready job a worker locks between that read and the commit is worked once '
  '(its resolution then leaves it expired). Returns how many jobs it expired. Errors: 22023 '
  'another state; 22004 a NULL reason.';

-- retry_now and reschedule_job return the state the job is in, paused too.
CREATE OR REPLACE FUNCTION conveyor.retry_now(id bigint)
RETURNS text
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_job conveyor.jobs := conveyor.manage_job(retry_now.id, 'retry_now');
BEGIN
  UPDATE conveyor.jobs AS j SET run_at = now(), expired_at = NULL WHERE j.id = v_job.id;
  RETURN conveyor.job_state(NULL, NULL, false, now(), v_job.error_count, now(),
                            conveyor.job_paused(ARRAY(SELECT p FROM conveyor.pauses AS p), v_job.queue, v_job.job_class, v_job.labels));
EXCEPTION WHEN unique_violation THEN
  RAISE EXCEPTION 'conveyor.retry_now: job % has unique_key %, which another unresolved job holds', retry_now.id, v_job.unique_key
    USING ERRCODE = '23505',
          HINT = 'Discard or wait for the other job first.';
END
$$;

COMMENT ON FUNCTION conveyor.retry_now(bigint) IS
  'Makes a scheduled, retrying, ready or expired job ready now: run_at = now(), expired_at '
  'cleared (an expired job is un-expired; its error_count and error history are kept). '
  'Returns the new state (ready, or paused while a pause matches the job). Workers find it at their next poll. Errors: P0002 no such '
  'job; 55000 a finished job; 55006 a job a worker holds; 23505 an expired job whose '
  'unique_key another unresolved job holds now.';

CREATE OR REPLACE FUNCTION conveyor.reschedule_job(id bigint, run_at timestamptz)
RETURNS text
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_job conveyor.jobs;
BEGIN
  IF reschedule_job.run_at IS NULL OR NOT isfinite(reschedule_job.run_at) THEN
    RAISE EXCEPTION 'conveyor.reschedule_job: run_at must be a finite time, not %', coalesce(reschedule_job.run_at::text, 'NULL')
      USING ERRCODE = '22023';
  END IF;
  v_job := conveyor.manage_job(reschedule_job.id, 'reschedule_job');
  UPDATE conveyor.jobs AS j SET run_at = reschedule_job.run_at WHERE j.id = v_job.id;
  RETURN conveyor.job_state(NULL, NULL, false, reschedule_job.run_at, v_job.error_count, now(),
                            conveyor.job_paused(ARRAY(SELECT p FROM conveyor.pauses AS p), v_job.queue, v_job.job_class, v_job.labels));
END
$$;

COMMENT ON FUNCTION conveyor.reschedule_job(bigint, timestamptz) IS
  'Moves an unresolved job no worker holds to run at run_at. Returns the new state (ready, '
  'scheduled or retrying; paused while a pause matches the job). Errors: P0002 no such job; 55000 a finished or expired job; 55006 '
  'a job a worker holds; 22023 a NULL or infinite run_at.';

-- queue_stats counts paused jobs too, in a column of their own (a new
-- result column: drop and create, with the grants of queue_stats and job_history).
DROP FUNCTION conveyor.queue_stats();
CREATE FUNCTION conveyor.queue_stats()
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
   GROUP BY v.queue
   ORDER BY v.queue;
$$;

COMMENT ON FUNCTION conveyor.queue_stats() IS
  'One row per queue, by the states of jobs_view: ready, scheduled (scheduled or retrying), '
  'working (running), errored (unresolved with error_count > 0), expired, finished, and '
  'oldest_ready_age (how long the oldest ready job has waited), paused (held by a pause, '
  'conveyor.pauses; counted in neither ready nor scheduled; last, so that readers of the '
  'older columns by position are unaffected). Reads the whole table; locks '
  'nothing.';

REVOKE ALL ON FUNCTION conveyor.queue_stats() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION conveyor.queue_stats() TO conveyor_worker, conveyor_admin;

COMMIT;
