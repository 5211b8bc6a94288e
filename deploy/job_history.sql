-- Deploy conveyor:job_history to pg
-- requires: jobs_unique_key
-- requires: retry_job
-- requires: finish_job
-- requires: destroy_job
-- requires: job_stats
-- requires: queue_stats
-- requires: lockers
-- requires: roles

BEGIN;

-- Job history, results and management (issue 14): what ran, what failed,
-- and what an operator can do about it. One change, so that branches built on
-- it merge one plan entry. retry_job, finish_job(s), job_limit, job_stats and
-- queue_stats belong to other changes (retry_job is already reworked since
-- v0.1.0): they are replaced here (CREATE OR REPLACE, or DROP + CREATE for a
-- new signature) and revert/job_history.sql restores their previous text.

-- --- the conveyor_admin role ---------------------------------------------------
-- As deploy/roles.sql: global to the cluster, so created only when missing.
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'conveyor_admin') THEN
    CREATE ROLE conveyor_admin NOLOGIN;
    COMMENT ON ROLE conveyor_admin IS
      'May inspect and manage conveyor jobs: jobs_view, list_jobs, retry_now, discard_job, '
      'reschedule_job, retry_jobs_where, discard_jobs_where, cleanup, destroy_job and the stats. '
      'Neither a worker nor an enqueuer.';
  END IF;
EXCEPTION WHEN insufficient_privilege THEN
  RAISE EXCEPTION USING
    ERRCODE = 'insufficient_privilege',
    MESSAGE = 'the role conveyor_admin is missing and ' || current_user || ' may not create it: ' || SQLERRM,
    HINT = 'Have a superuser create it once per cluster (CREATE ROLE conveyor_admin NOLOGIN; '
           'docs/security.md), then install again.';
END
$$;

GRANT USAGE ON SCHEMA conveyor TO conveyor_admin;
-- The management functions are SECURITY INVOKER: the admin reads and changes
-- rows with its own rights, which are these (and no INSERT: enqueue is the
-- enqueuer's).
GRANT SELECT, UPDATE, DELETE ON conveyor.jobs TO conveyor_admin;
GRANT SELECT ON conveyor.lockers TO conveyor_admin;

-- --- columns -------------------------------------------------------------------
-- No rewrite: nullable columns, and a constant default (stored in the catalog).
-- No check constraints: each would be prepared again for every INSERT (see
-- deploy/jobs_unique_key.sql); the only writers are conveyor's functions.
ALTER TABLE conveyor.jobs
  ADD COLUMN result jsonb,
  ADD COLUMN errors jsonb NOT NULL DEFAULT '[]',
  ADD COLUMN attempted_at timestamptz,
  ADD COLUMN attempted_by text;

COMMENT ON COLUMN conveyor.jobs.result IS
  'NULL, or the JSON value the job returned, stored when it was finished (kept): '
  'finish_job(id, result), finish_jobs(..., results). At most job_limit(''result'') bytes '
  '(1 MiB) of JSON text.';
COMMENT ON COLUMN conveyor.jobs.errors IS
  'The error history, oldest first: a JSON array of {"attempt", "at", "message", "backtrace", '
  '"worker", "started_at"} objects (retry_job; discard_job adds one with "operator"). Only the '
  'newest job_limit(''errors_kept'') (10) are kept; error_count counts them all, and '
  'last_error_message/last_error_backtrace repeat the newest.';
COMMENT ON COLUMN conveyor.jobs.attempted_at IS
  'When the latest resolved attempt started, as the worker reported it (NULL: never worked, '
  'or resolved without the worker saying).';
COMMENT ON COLUMN conveyor.jobs.attempted_by IS
  'The worker that made the latest resolved attempt: host:pid of its process (NULL when '
  'unknown).';

-- --- limits --------------------------------------------------------------------
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
         WHEN 'result' THEN 1048576              -- bytes of a result's JSON text
         WHEN 'errors_kept' THEN 10              -- error-history entries kept per job
         ELSE ('conveyor.job_limit: no limit named ' || job_limit.name)::integer
       END;

COMMENT ON FUNCTION conveyor.job_limit(text) IS
  'Internal. The job limits, by name: job_class 500 and queue 100 characters, priority 32767 '
  'at most, last_error_message 1,000 and last_error_backtrace 10,000 characters kept, result '
  '1,048,576 bytes of JSON text, errors_kept 10 error-history entries. The one '
  'home of these numbers for the functions (inlined and folded by the planner); the table''s '
  'check constraints repeat them as literals, as a function call there would cost every insert '
  'tens of microseconds, and tests/pgtap/jobs_table.sql proves the two agree. Errors: 22P02 an '
  'unknown name.';

-- --- the error history -----------------------------------------------------------
-- Appends an entry and keeps the newest errors_kept. A jsonpath slice, not a
-- subquery, so that the function stays inlinable into retry_job's UPDATE.
CREATE FUNCTION conveyor.errors_append(errors jsonb, entry jsonb)
RETURNS jsonb
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
RETURN pg_catalog.jsonb_path_query_array(
         coalesce(errors_append.errors, '[]') || pg_catalog.jsonb_build_array(errors_append.entry),
         '$[last - $n + 1 to last]',
         pg_catalog.jsonb_build_object('n', conveyor.job_limit('errors_kept')));

COMMENT ON FUNCTION conveyor.errors_append(jsonb, jsonb) IS
  'Internal. The error history errors with entry appended, cut to the newest '
  'job_limit(''errors_kept'') entries. Inlined by the planner. Locks nothing.';

-- --- the one definition of a job's state ----------------------------------------
-- as_of (the caller's now()) is an argument, so that the function is
-- IMMUTABLE with a body bound at creation and needs no SET clause, which
-- would stop the planner from inlining it.
CREATE FUNCTION conveyor.job_state(
  finished_at timestamptz, expired_at timestamptz, locked boolean,
  run_at timestamptz, error_count integer, as_of timestamptz)
RETURNS text
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
RETURN CASE WHEN job_state.finished_at IS NOT NULL THEN 'finished'
            WHEN job_state.expired_at IS NOT NULL THEN 'expired'
            WHEN job_state.locked THEN 'running'
            WHEN job_state.run_at > job_state.as_of AND job_state.error_count > 0 THEN 'retrying'
            WHEN job_state.run_at > job_state.as_of THEN 'scheduled'
            ELSE 'ready'
       END;

COMMENT ON FUNCTION conveyor.job_state(timestamptz, timestamptz, boolean, timestamptz, integer, timestamptz) IS
  'Internal. The one definition of a job''s state, first match wins: finished (finished_at '
  'set), expired (expired_at set), running (locked: some session holds the job''s advisory '
  'lock), retrying (run_at in the future after an error), scheduled (run_at in the future), '
  'ready (run_at <= as_of, the caller''s now()). jobs_view, list_jobs, job_stats, queue_stats and the management functions all use '
  'it. Inlined by the planner.';

-- Locks of jobs, one row per job (a job being released is held twice for a
-- moment: its session lock and the releasing transaction's lock).
CREATE VIEW conveyor.jobs_view AS
SELECT j.id, j.priority, j.run_at, j.job_class, j.queue, j.args, j.data, j.error_count,
       j.maximum_retry_count, j.last_error_message, j.last_error_backtrace, j.finished_at,
       j.expired_at, j.created_at, j.unique_key, j.result, j.errors, j.attempted_at,
       j.attempted_by,
       conveyor.job_state(j.finished_at, j.expired_at, w.pid IS NOT NULL, j.run_at, j.error_count, pg_catalog.now()) AS state,
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
    ON w.id = j.id;

COMMENT ON VIEW conveyor.jobs_view IS
  'Every job with its state computed one way (job_state): finished, expired, running, '
  'retrying, scheduled or ready; clients treat an unknown state as an opaque string. '
  'locked_by: the pid of the session holding the job''s advisory lock (NULL if none); a job '
  'waiting in a worker''s buffer is locked, so it counts as running. Reads pg_locks once per '
  'query; locks nothing.';
COMMENT ON COLUMN conveyor.jobs_view.state IS
  'finished, expired, running, retrying, scheduled or ready (conveyor.job_state).';
COMMENT ON COLUMN conveyor.jobs_view.locked_by IS
  'The pid of the session holding the job''s advisory lock, or NULL.';

-- --- stats on the one state definition -------------------------------------------
-- The WHERE tests the columns, not the state, so that the planner may use the
-- partial indexes: by job_state's definition, "neither finished nor expired"
-- is exactly "state not finished and not expired".
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
  SELECT v.job_class,
         count(*),
         count(*) FILTER (WHERE v.state = 'running'),
         count(*) FILTER (WHERE v.error_count > 0),
         max(v.error_count),
         min(v.run_at)
    FROM conveyor.jobs_view AS v
   WHERE v.finished_at IS NULL AND v.expired_at IS NULL
   GROUP BY v.job_class
   ORDER BY count(*) DESC, v.job_class;
$$;

COMMENT ON FUNCTION conveyor.job_stats() IS
  'Que''s job_stats: one row per job_class among unresolved jobs (neither finished nor expired), '
  'most numerous first: count, count_working (state running in jobs_view: some session holds '
  'the lock right now), count_errored (error_count > 0), highest_error_count, oldest_run_at. '
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
  SELECT v.queue,
         count(*) FILTER (WHERE v.state = 'ready'),
         count(*) FILTER (WHERE v.state IN ('scheduled', 'retrying')),
         count(*) FILTER (WHERE v.state = 'running'),
         count(*) FILTER (WHERE v.state NOT IN ('finished', 'expired') AND v.error_count > 0),
         count(*) FILTER (WHERE v.state = 'expired'),
         count(*) FILTER (WHERE v.state = 'finished'),
         now() - min(v.run_at) FILTER (WHERE v.state = 'ready')
    FROM conveyor.jobs_view AS v
   GROUP BY v.queue
   ORDER BY v.queue;
$$;

COMMENT ON FUNCTION conveyor.queue_stats() IS
  'One row per queue, by the states of jobs_view: ready, scheduled (scheduled or retrying), '
  'working (running), errored (unresolved with error_count > 0), expired, finished, and '
  'oldest_ready_age (how long the oldest ready job has waited). Reads the whole table; locks '
  'nothing.';

-- --- finish with a result ----------------------------------------------------------
DROP FUNCTION conveyor.finish_job(bigint);
DROP FUNCTION conveyor.finish_jobs(bigint[], bigint[]);

CREATE FUNCTION conveyor.finish_jobs(
  ids bigint[],
  held bigint[] DEFAULT NULL,
  results jsonb DEFAULT NULL,
  attempted_at timestamptz[] DEFAULT NULL,
  attempted_by text DEFAULT NULL
)
RETURNS SETOF bigint
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
-- Plans once per session that never scan the jobs table: see deploy/lock_jobs.sql.
SET enable_seqscan = off
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
  v_done bigint[];
  v_big integer;
BEGIN
  IF finish_jobs.results IS NULL AND finish_jobs.attempted_at IS NULL AND finish_jobs.attempted_by IS NULL THEN
    RETURN QUERY SELECT r.id FROM conveyor.resolve_jobs('finish', finish_jobs.ids, finish_jobs.held) AS r(id);
    RETURN;
  END IF;

  IF finish_jobs.results IS NOT NULL THEN
    IF jsonb_typeof(finish_jobs.results) IS DISTINCT FROM 'array'
       OR jsonb_array_length(finish_jobs.results) <> coalesce(cardinality(finish_jobs.ids), 0) THEN
      RAISE EXCEPTION 'conveyor.finish_jobs: results must be a JSON array with one element per id (% ids)',
        coalesce(cardinality(finish_jobs.ids), 0)
        USING ERRCODE = '22023';
    END IF;
    SELECT min(r.o) INTO v_big
      FROM jsonb_array_elements(finish_jobs.results) WITH ORDINALITY AS r(v, o)
     WHERE octet_length(r.v::text) > conveyor.job_limit('result');
    IF v_big IS NOT NULL THEN
      RAISE EXCEPTION 'conveyor.finish_jobs: the result of job % is larger than % bytes of JSON',
        finish_jobs.ids[v_big], conveyor.job_limit('result')
        USING ERRCODE = '54000';
    END IF;
  END IF;

  -- A JSON null result is no result (SQL NULL). coalesce(): see resolve_jobs.
  WITH done AS (
    UPDATE conveyor.jobs AS j
       SET finished_at = now(),
           result = nullif(finish_jobs.results -> (u.o - 1)::integer, 'null'::jsonb),
           attempted_at = finish_jobs.attempted_at[u.o],
           attempted_by = finish_jobs.attempted_by
      FROM unnest(finish_jobs.ids) WITH ORDINALITY AS u(id, o)
     WHERE j.id = u.id AND coalesce(j.finished_at, j.expired_at) IS NULL
    RETURNING j.id
  )
  SELECT coalesce(array_agg(done.id), '{}') INTO v_done FROM done;

  PERFORM conveyor.release_job_locks(finish_jobs.ids, finish_jobs.held);
  RETURN QUERY SELECT unnest(v_done);
END
$$;

COMMENT ON FUNCTION conveyor.finish_jobs(bigint[], bigint[], jsonb, timestamptz[], text) IS
  'Marks the given jobs finished (finished_at = now()), keeping their rows for inspection. Returns the ids it finished; an id that does not exist or whose job is already '
  'finished or expired is skipped. Does not require the caller to hold the jobs'' locks (job code '
  'resolves its job on a connection that is not the locker''s); releases those the caller holds, '
  'safely: the jobs stay locked until the calling transaction commits. held (optional): the ids '
  'of the jobs the caller knows its session holds, as a locker that keeps count does; it saves '
  'reading pg_locks (a few hundred microseconds a call), and only locks of ids in both lists '
  'are released. results (optional): a JSON array, one element per id, stored as each job''s '
  'result (a JSON null stores none). attempted_at (optional, one per id) and attempted_by: '
  'when each attempt started and which worker (host:pid) made it. Errors: 22023 results not '
  'an array of the ids'' length; 54000 a result over job_limit(''result'') bytes of JSON text.';

CREATE FUNCTION conveyor.finish_job(id bigint, result jsonb DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql  -- not SQL: see held_job_ids
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF finish_job.result IS NULL THEN
    RETURN EXISTS (SELECT FROM conveyor.resolve_jobs('finish', ARRAY[finish_job.id]));
  END IF;
  RETURN EXISTS (SELECT FROM conveyor.finish_jobs(ARRAY[finish_job.id], NULL,
                                                  pg_catalog.jsonb_build_array(finish_job.result)));
END
$$;

COMMENT ON FUNCTION conveyor.finish_job(bigint, jsonb) IS
  'The one-job form of finish_jobs: true when it finished the job, false when the id does not '
  'exist or the job is already finished or expired. result (optional): the job''s JSON result, '
  'stored in jobs.result (at most job_limit(''result'') bytes of JSON text, else 54000).';

REVOKE ALL ON FUNCTION conveyor.finish_jobs(bigint[], bigint[], jsonb, timestamptz[], text) FROM PUBLIC;
REVOKE ALL ON FUNCTION conveyor.finish_job(bigint, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION conveyor.finish_jobs(bigint[], bigint[], jsonb, timestamptz[], text) TO conveyor_worker;
GRANT EXECUTE ON FUNCTION conveyor.finish_job(bigint, jsonb) TO conveyor_worker;

-- --- retry_job records the error history ---------------------------------------------
DROP FUNCTION conveyor.retry_job(bigint, text, text, double precision, boolean);

CREATE FUNCTION conveyor.retry_job(
  id bigint,
  error_message text DEFAULT NULL,
  error_backtrace text DEFAULT NULL,
  delay double precision DEFAULT NULL,
  expire boolean DEFAULT false,
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
  -- run_at. The error joins the history (errors_append keeps the newest).
  RETURN QUERY
  UPDATE conveyor.jobs AS j
     SET error_count = j.error_count + 1,
         last_error_message = left(retry_job.error_message, conveyor.job_limit('last_error_message')),
         last_error_backtrace = left(retry_job.error_backtrace, conveyor.job_limit('last_error_backtrace')),
         run_at = CASE WHEN retry_job.expire OR j.error_count + 1 > j.maximum_retry_count THEN j.run_at
                       ELSE now() + make_interval(secs => coalesce(retry_job.delay, (j.error_count + 1)::double precision ^ 4 + 3))
                  END,
         expired_at = CASE WHEN retry_job.expire OR j.error_count + 1 > j.maximum_retry_count THEN now() END,
         errors = conveyor.errors_append(j.errors, jsonb_build_object(
                    'attempt', j.error_count + 1,
                    'at', now(),
                    'message', left(retry_job.error_message, conveyor.job_limit('last_error_message')),
                    'backtrace', left(retry_job.error_backtrace, conveyor.job_limit('last_error_backtrace')),
                    'worker', retry_job.attempted_by,
                    'started_at', retry_job.attempted_at)),
         attempted_at = retry_job.attempted_at,
         attempted_by = retry_job.attempted_by
   WHERE j.id = retry_job.id AND j.finished_at IS NULL AND j.expired_at IS NULL
  RETURNING j.*;

  PERFORM conveyor.release_job_locks(ARRAY[retry_job.id]);
END
$$;

COMMENT ON FUNCTION conveyor.retry_job(bigint, text, text, double precision, boolean, timestamptz, text) IS
  'Records an error on a job and schedules its next run: increments error_count, stores '
  'error_message (cut to 1,000 characters) and error_backtrace (cut to 10,000), and sets '
  'run_at = now() + delay seconds, by default error_count^4 + 3 (4, 19, 84, 259 ... seconds). '
  'When the new error_count exceeds maximum_retry_count, or when expire is true (a worker '
  'giving up on the job after an error, as Que''s expire in handle_error), the job is expired '
  'instead (expired_at = now(), run_at kept), with the error recorded all the same. The error '
  'is appended to the errors history ({"attempt", "at", "message", "backtrace", "worker", '
  '"started_at"}, the newest job_limit(''errors_kept'') kept); attempted_at (when the attempt '
  'started) and attempted_by (the worker, host:pid) are optional and stored on the job too. '
  'Returns the updated row, or no row when the id does not exist or the job is already '
  'finished or expired. Releases the caller''s lock on the job as the resolution functions do. '
  'Errors: 22023 a negative or NaN delay; 22004 a NULL expire; 22008 a delay too large for a '
  'timestamp.';

REVOKE ALL ON FUNCTION conveyor.retry_job(bigint, text, text, double precision, boolean, timestamptz, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION conveyor.retry_job(bigint, text, text, double precision, boolean, timestamptz, text) TO conveyor_worker;

-- --- listing --------------------------------------------------------------------------
CREATE FUNCTION conveyor.list_jobs(
  state text DEFAULT NULL,
  queue text DEFAULT NULL,
  job_class text DEFAULT NULL,
  search text DEFAULT NULL,
  before_id bigint DEFAULT NULL,
  max_rows integer DEFAULT 50
)
RETURNS SETOF conveyor.jobs_view
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  -- A substring, not a pattern: the LIKE wildcards and the escape are escaped.
  v_pattern text := '%' || replace(replace(replace(list_jobs.search, '\', '\\'), '%', '\%'), '_', '\_') || '%';
BEGIN
  IF list_jobs.max_rows IS NULL OR list_jobs.max_rows NOT BETWEEN 1 AND 10000 THEN
    RAISE EXCEPTION 'conveyor.list_jobs: max_rows must be 1 to 10000, not %', coalesce(list_jobs.max_rows::text, 'NULL')
      USING ERRCODE = '22023';
  END IF;
  RETURN QUERY
  SELECT v.*
    FROM conveyor.jobs_view AS v
   WHERE (list_jobs.state IS NULL OR v.state = list_jobs.state)
     AND (list_jobs.queue IS NULL OR v.queue = list_jobs.queue)
     AND (list_jobs.job_class IS NULL OR v.job_class = list_jobs.job_class)
     AND (list_jobs.before_id IS NULL OR v.id < list_jobs.before_id)
     AND (list_jobs.search IS NULL
          OR v.job_class ILIKE v_pattern
          OR v.args::text ILIKE v_pattern
          OR v.data::text ILIKE v_pattern
          OR v.last_error_message ILIKE v_pattern)
   ORDER BY v.id DESC
   LIMIT list_jobs.max_rows;
END
$$;

COMMENT ON FUNCTION conveyor.list_jobs(text, text, text, text, bigint, integer) IS
  'Jobs of jobs_view, newest first (id descending), filtered by state, queue, job_class (each '
  'exact; NULL: any) and search (a case-insensitive substring of job_class, args, data or '
  'last_error_message), at most max_rows (1 to 10,000; default 50). Keyset pagination: '
  'before_id returns the jobs with a smaller id, so pass the last id of a page to get the '
  'next. An unknown state matches nothing. Errors: 22023 max_rows out of range.';

-- --- managing single jobs ----------------------------------------------------------------
-- Takes the row lock and the job's advisory lock for this transaction, so no
-- worker can lock the job until the change commits: what the checks saw
-- stays true. A worker holding the lock makes pg_try_advisory_xact_lock
-- fail: the job is being worked (or waits in a worker's buffer).
CREATE FUNCTION conveyor.manage_job(id bigint, action text)
RETURNS conveyor.jobs
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_job conveyor.jobs;
  v_pid integer;
BEGIN
  SELECT * INTO v_job FROM conveyor.jobs AS j WHERE j.id = manage_job.id FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'conveyor.%: no job with id %', manage_job.action, coalesce(manage_job.id::text, 'NULL')
      USING ERRCODE = 'P0002';
  END IF;
  IF v_job.finished_at IS NOT NULL OR (v_job.expired_at IS NOT NULL AND manage_job.action <> 'retry_now') THEN
    RAISE EXCEPTION 'conveyor.%: job % is %', manage_job.action, manage_job.id,
      CASE WHEN v_job.finished_at IS NOT NULL THEN 'finished' ELSE 'expired' END
      USING ERRCODE = '55000',
            HINT = CASE WHEN v_job.finished_at IS NULL THEN 'conveyor.retry_now makes an expired job ready again.'
                        ELSE 'A finished job is done; enqueue a new one to run it again.' END;
  END IF;
  IF NOT pg_try_advisory_xact_lock(conveyor.job_lock_key1(v_job.id), conveyor.job_lock_key2(v_job.id)) THEN
    SELECT min(l.pid) INTO v_pid
      FROM pg_catalog.pg_locks AS l
     WHERE l.locktype = 'advisory' AND l.objsubid = 2 AND l.granted
       AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d WHERE d.datname = current_database())
       AND conveyor.job_lock_id(l.classid, l.objid) = v_job.id;
    RAISE EXCEPTION 'conveyor.%: job % is being worked (its lock is held by pid %)',
      manage_job.action, manage_job.id, coalesce(v_pid::text, 'unknown')
      USING ERRCODE = '55006',
            HINT = 'Wait until the worker resolves it.';
  END IF;
  RETURN v_job;
END
$$;

COMMENT ON FUNCTION conveyor.manage_job(bigint, text) IS
  'Internal. The common checks of retry_now, discard_job and reschedule_job (action names the '
  'caller in messages): locks the job''s row and takes its advisory lock for the transaction, '
  'so no worker can lock it before the change commits (until then jobs_view shows it running), '
  'and returns the row. Errors: P0002 no '
  'such job; 55000 a finished job (an expired one too, but for retry_now); 55006 a job whose '
  'lock a worker holds.';

CREATE FUNCTION conveyor.retry_now(id bigint)
RETURNS text
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_job conveyor.jobs := conveyor.manage_job(retry_now.id, 'retry_now');
BEGIN
  UPDATE conveyor.jobs AS j SET run_at = now(), expired_at = NULL WHERE j.id = v_job.id;
  RETURN conveyor.job_state(NULL, NULL, false, now(), v_job.error_count, now());
EXCEPTION WHEN unique_violation THEN
  RAISE EXCEPTION 'conveyor.retry_now: job % has unique_key %, which another unresolved job holds', retry_now.id, v_job.unique_key
    USING ERRCODE = '23505',
          HINT = 'Discard or wait for the other job first.';
END
$$;

COMMENT ON FUNCTION conveyor.retry_now(bigint) IS
  'Makes a scheduled, retrying, ready or expired job ready now: run_at = now(), expired_at '
  'cleared (an expired job is un-expired; its error_count and error history are kept). '
  'Returns the new state (ready). Workers find it at their next poll. Errors: P0002 no such '
  'job; 55000 a finished job; 55006 a job a worker holds; 23505 an expired job whose '
  'unique_key another unresolved job holds now.';

CREATE FUNCTION conveyor.discard_job(id bigint, reason text DEFAULT 'discarded by an operator')
RETURNS text
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_job conveyor.jobs;
BEGIN
  IF discard_job.reason IS NULL THEN
    RAISE EXCEPTION 'conveyor.discard_job: reason must not be NULL' USING ERRCODE = '22004';
  END IF;
  v_job := conveyor.manage_job(discard_job.id, 'discard_job');
  UPDATE conveyor.jobs AS j
     SET expired_at = now(),
         last_error_message = left(discard_job.reason, conveyor.job_limit('last_error_message')),
         last_error_backtrace = NULL,
         errors = conveyor.errors_append(j.errors, jsonb_build_object(
                    'attempt', j.error_count,
                    'at', now(),
                    'message', left(discard_job.reason, conveyor.job_limit('last_error_message')),
                    'backtrace', NULL,
                    'worker', NULL,
                    'operator', session_user))
   WHERE j.id = v_job.id;
  RETURN 'expired';
END
$$;

COMMENT ON FUNCTION conveyor.discard_job(bigint, text) IS
  'Expires a job no worker holds, now: it will never run. The reason becomes '
  'last_error_message and an error-history entry ({"attempt": error_count, "message": reason, '
  '"operator": the session user, ...}); error_count is unchanged. A job being worked is '
  'refused (55006), not marked: discard it once it is resolved or retried. Returns the new '
  'state (expired). Errors: P0002 no such job; 55000 a finished or expired job; 55006 a job a '
  'worker holds; 22004 a NULL reason.';

CREATE FUNCTION conveyor.reschedule_job(id bigint, run_at timestamptz)
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
  RETURN conveyor.job_state(NULL, NULL, false, reschedule_job.run_at, v_job.error_count, now());
END
$$;

COMMENT ON FUNCTION conveyor.reschedule_job(bigint, timestamptz) IS
  'Moves an unresolved job no worker holds to run at run_at. Returns the new state (ready, '
  'scheduled or retrying). Errors: P0002 no such job; 55000 a finished or expired job; 55006 '
  'a job a worker holds; 22023 a NULL or infinite run_at.';

-- --- managing jobs by filter --------------------------------------------------------------
-- No advisory lock per job: a transaction's locks live in the shared lock
-- table until it ends, and "retry every expired job" may touch a million.
-- Jobs running when the filter is read are skipped. Expired and future jobs
-- are never locked by workers, so a retry cannot race one; a discard of ready
-- jobs can: a worker that locks one of them between this read and the commit
-- works it (its resolution then finds the job expired and leaves it so).
CREATE FUNCTION conveyor.jobs_where_check(action text, state text, allowed text[])
RETURNS void
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF jobs_where_check.state IS NOT NULL AND NOT jobs_where_check.state = ANY (jobs_where_check.allowed) THEN
    RAISE EXCEPTION 'conveyor.%: state must be NULL or one of %, not %', jobs_where_check.action,
      array_to_string(jobs_where_check.allowed, ', '), jobs_where_check.state
      USING ERRCODE = '22023';
  END IF;
END
$$;

COMMENT ON FUNCTION conveyor.jobs_where_check(text, text, text[]) IS
  'Internal. Raises 22023 when state is neither NULL nor one of allowed (for the messages of '
  'retry_jobs_where and discard_jobs_where, named by action).';

CREATE FUNCTION conveyor.retry_jobs_where(
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
  PERFORM conveyor.jobs_where_check('retry_jobs_where', retry_jobs_where.state, v_states || 'ready'::text);
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
  'retrying or scheduled; NULL means those three; ready is allowed too), queue and job_class '
  '(exact), error_like (an ILIKE pattern on last_error_message), since (created_at >= since). '
  'Jobs being worked are skipped. Returns how many jobs it made ready. One statement, without '
  'a lock per job, for any number of jobs. Errors: 22023 another state; 23505 an expired job '
  'whose unique_key another unresolved job holds (nothing is changed).';

CREATE FUNCTION conveyor.discard_jobs_where(
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
  v_states text[] := ARRAY['ready', 'retrying', 'scheduled'];
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
  'retrying or scheduled; NULL means those three), queue, job_class, error_like, since, as '
  'retry_jobs_where; reason as discard_job. Jobs being worked when the filter is read are '
  'skipped; a ready job a worker locks between that read and the commit is worked once '
  '(its resolution then leaves it expired). Returns how many jobs it expired. Errors: 22023 '
  'another state; 22004 a NULL reason.';

-- --- cleanup --------------------------------------------------------------------------------
CREATE FUNCTION conveyor.cleanup(
  finished_before interval DEFAULT '14 days',
  expired_before interval DEFAULT NULL,
  batch_size integer DEFAULT 1000,
  max_batches integer DEFAULT NULL
)
RETURNS bigint
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
-- Plans once per session that walk jobs_resolved_idx, never the table.
SET enable_seqscan = off
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
  v_finished timestamptz := now() - cleanup.finished_before;
  v_expired timestamptz := now() - cleanup.expired_before;
  -- The index range: everything resolved before the later of the two cuts
  -- (greatest ignores a NULL); each row is then tested against its own cut.
  v_upper timestamptz := greatest(v_finished, v_expired);
  v_deleted integer;
  v_total bigint := 0;
  v_batches integer := 0;
BEGIN
  IF cleanup.batch_size IS NULL OR cleanup.batch_size NOT BETWEEN 1 AND 100000 THEN
    RAISE EXCEPTION 'conveyor.cleanup: batch_size must be 1 to 100000, not %', coalesce(cleanup.batch_size::text, 'NULL')
      USING ERRCODE = '22023';
  ELSIF cleanup.max_batches < 1 THEN
    RAISE EXCEPTION 'conveyor.cleanup: max_batches must be NULL or at least 1, not %', cleanup.max_batches
      USING ERRCODE = '22023';
  ELSIF cleanup.finished_before < interval '0' OR cleanup.expired_before < interval '0' THEN
    RAISE EXCEPTION 'conveyor.cleanup: finished_before and expired_before must not be negative'
      USING ERRCODE = '22023';
  END IF;
  IF v_upper IS NULL THEN
    RETURN 0;
  END IF;

  LOOP
    -- Oldest first, through jobs_resolved_idx (the expression and predicate
    -- are the index's). SKIP LOCKED: never wait for a row an operator is
    -- changing. Only finished or expired rows match: an unresolved job has
    -- both columns NULL, so neither cut test can be true.
    WITH doomed AS (
      SELECT j.id
        FROM conveyor.jobs AS j
       WHERE coalesce(j.finished_at, j.expired_at) < v_upper
         AND (j.finished_at IS NOT NULL OR j.expired_at IS NOT NULL)
         AND (j.finished_at < v_finished OR j.expired_at < v_expired)
       ORDER BY coalesce(j.finished_at, j.expired_at)
       LIMIT cleanup.batch_size
         FOR UPDATE SKIP LOCKED
    ), gone AS (
      DELETE FROM conveyor.jobs AS j USING doomed WHERE j.id = doomed.id
      RETURNING 1
    )
    SELECT count(*) INTO v_deleted FROM gone;
    v_total := v_total + v_deleted;
    v_batches := v_batches + 1;
    EXIT WHEN v_deleted < cleanup.batch_size OR v_batches >= cleanup.max_batches;
  END LOOP;
  RETURN v_total;
END
$$;

COMMENT ON FUNCTION conveyor.cleanup(interval, interval, integer, integer) IS
  'Deletes kept jobs: finished more than finished_before ago (default 14 days; NULL keeps '
  'every finished job) and expired more than expired_before ago (default NULL: expired jobs '
  'are kept). Works oldest first in batches of batch_size (1 to 100,000; default 1,000) '
  'through the index jobs_resolved_idx, never a sequential scan, skipping rows another '
  'transaction has locked; stops after max_batches batches (NULL: when done). Never deletes '
  'an unresolved job. Returns how many jobs it deleted. For short transactions on a busy '
  'table call it with max_batches => 1 until it returns less than batch_size, as the worker '
  'does. Errors: 22023 a batch_size or max_batches out of range, or a negative interval.';

-- --- privileges -------------------------------------------------------------------------------
REVOKE ALL ON conveyor.jobs_view FROM PUBLIC;
GRANT SELECT ON conveyor.jobs_view TO conveyor_worker, conveyor_admin;

REVOKE ALL ON FUNCTION conveyor.errors_append(jsonb, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION conveyor.job_state(timestamptz, timestamptz, boolean, timestamptz, integer, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION conveyor.list_jobs(text, text, text, text, bigint, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION conveyor.manage_job(bigint, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION conveyor.retry_now(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION conveyor.discard_job(bigint, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION conveyor.reschedule_job(bigint, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION conveyor.jobs_where_check(text, text, text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION conveyor.retry_jobs_where(text, text, text, text, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION conveyor.discard_jobs_where(text, text, text, text, timestamptz, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION conveyor.cleanup(interval, interval, integer, integer) FROM PUBLIC;

-- Workers: what their statements and the stats need, and cleanup (the worker
-- runs it on a schedule).
GRANT EXECUTE ON FUNCTION conveyor.errors_append(jsonb, jsonb) TO conveyor_worker;
GRANT EXECUTE ON FUNCTION conveyor.job_state(timestamptz, timestamptz, boolean, timestamptz, integer, timestamptz) TO conveyor_worker;
GRANT EXECUTE ON FUNCTION conveyor.cleanup(interval, interval, integer, integer) TO conveyor_worker;

-- Admins: inspection and management, and the internals those call.
GRANT EXECUTE ON FUNCTION conveyor.errors_append(jsonb, jsonb) TO conveyor_admin;
GRANT EXECUTE ON FUNCTION conveyor.job_state(timestamptz, timestamptz, boolean, timestamptz, integer, timestamptz) TO conveyor_admin;
GRANT EXECUTE ON FUNCTION conveyor.list_jobs(text, text, text, text, bigint, integer) TO conveyor_admin;
GRANT EXECUTE ON FUNCTION conveyor.manage_job(bigint, text) TO conveyor_admin;
GRANT EXECUTE ON FUNCTION conveyor.retry_now(bigint) TO conveyor_admin;
GRANT EXECUTE ON FUNCTION conveyor.discard_job(bigint, text) TO conveyor_admin;
GRANT EXECUTE ON FUNCTION conveyor.reschedule_job(bigint, timestamptz) TO conveyor_admin;
GRANT EXECUTE ON FUNCTION conveyor.jobs_where_check(text, text, text[]) TO conveyor_admin;
GRANT EXECUTE ON FUNCTION conveyor.retry_jobs_where(text, text, text, text, timestamptz) TO conveyor_admin;
GRANT EXECUTE ON FUNCTION conveyor.discard_jobs_where(text, text, text, text, timestamptz, text) TO conveyor_admin;
GRANT EXECUTE ON FUNCTION conveyor.cleanup(interval, interval, integer, integer) TO conveyor_admin;
GRANT EXECUTE ON FUNCTION conveyor.job_stats() TO conveyor_admin;
GRANT EXECUTE ON FUNCTION conveyor.queue_stats() TO conveyor_admin;
GRANT EXECUTE ON FUNCTION conveyor.destroy_job(bigint) TO conveyor_admin;
GRANT EXECUTE ON FUNCTION conveyor.job_limit(text) TO conveyor_admin;
GRANT EXECUTE ON FUNCTION conveyor.job_lock_key1(bigint) TO conveyor_admin;
GRANT EXECUTE ON FUNCTION conveyor.job_lock_key2(bigint) TO conveyor_admin;
GRANT EXECUTE ON FUNCTION conveyor.job_lock_id(oid, oid) TO conveyor_admin;
GRANT EXECUTE ON FUNCTION conveyor.sorted_array_contains(bigint[], bigint) TO conveyor_admin;
GRANT EXECUTE ON FUNCTION conveyor.held_job_ids() TO conveyor_admin;
GRANT EXECUTE ON FUNCTION conveyor.working_job_ids() TO conveyor_admin;
GRANT EXECUTE ON FUNCTION conveyor.release_job_locks(bigint[], bigint[]) TO conveyor_admin;
GRANT EXECUTE ON FUNCTION conveyor.resolve_jobs(text, bigint[], bigint[]) TO conveyor_admin;

COMMIT;
