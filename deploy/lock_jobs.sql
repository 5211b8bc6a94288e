-- Deploy conveyor:lock_jobs to pg
-- requires: job_locks

BEGIN;

CREATE FUNCTION conveyor.recheck_locked_jobs(ids bigint[])
RETURNS SETOF conveyor.jobs
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_ready conveyor.jobs[];
BEGIN
  -- This statement takes a new snapshot. A job the caller's lock statement saw
  -- as ready may since have been resolved and unlocked by another session
  -- (destroyed, finished, expired or retried into the future): the lock is
  -- then worthless, so release it instead of handing the job out again.
  v_ready := ARRAY(
    SELECT j FROM conveyor.jobs AS j
     WHERE j.id = ANY (recheck_locked_jobs.ids)
       AND j.finished_at IS NULL AND j.expired_at IS NULL
       AND j.run_at <= now()
     ORDER BY j.priority, j.run_at, j.id);

  IF cardinality(v_ready) < cardinality(recheck_locked_jobs.ids) THEN
    PERFORM pg_catalog.pg_advisory_unlock(((i >> 32)::integer # 1129270870), i::bit(32)::integer)
       FROM unnest(recheck_locked_jobs.ids) AS i
      WHERE i NOT IN (SELECT (r).id FROM unnest(v_ready) AS r);
  END IF;

  RETURN QUERY SELECT * FROM unnest(v_ready);
END
$$;

COMMENT ON FUNCTION conveyor.recheck_locked_jobs(bigint[]) IS
  'Internal. Given jobs the caller has just locked, returns those still ready, re-read with a '
  'fresh snapshot, and releases the locks of the others. Used by lock_jobs and lock_jobs_by_id.';

CREATE FUNCTION conveyor.lock_jobs(
  queues text[] DEFAULT ARRAY['default'],
  max_jobs integer DEFAULT 1,
  max_priority integer DEFAULT NULL
)
RETURNS SETOF conveyor.jobs
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_held bigint[];
  v_locked bigint[];
  v_ceiling smallint;
BEGIN
  IF lock_jobs.queues IS NULL OR lock_jobs.max_jobs IS NULL THEN
    RAISE EXCEPTION 'conveyor.lock_jobs: queues and max_jobs must not be NULL' USING ERRCODE = '22004';
  ELSIF cardinality(lock_jobs.queues) = 0 THEN
    RAISE EXCEPTION 'conveyor.lock_jobs: queues must name at least one queue' USING ERRCODE = '22023';
  ELSIF lock_jobs.max_jobs < 0 THEN
    RAISE EXCEPTION 'conveyor.lock_jobs: max_jobs must not be negative, not %', lock_jobs.max_jobs USING ERRCODE = '22023';
  ELSIF lock_jobs.max_jobs = 0 OR lock_jobs.max_priority < 0 THEN
    RETURN;
  END IF;
  v_ceiling := least(coalesce(lock_jobs.max_priority, 32767), 32767);
  v_held := conveyor.held_job_ids();

  -- Walk jobs_ready_idx in (priority, run_at, id) order, one row per step,
  -- merging the queues (each step asks every queue for its next row and takes
  -- the most urgent), trying the lock of each ready row until max_jobs are
  -- locked. Rows other sessions hold fail the try and are stepped over; rows
  -- this session holds are stepped over without a try. A row not ready yet
  -- means every later row of that priority is not ready either, so the walk
  -- jumps to the next priority instead of reading the scheduled ones.
  WITH RECURSIVE walk (id, locked, n_locked, k_priority, k_run_at, k_id) AS (
      SELECT 0::bigint, false, 0, (-1)::smallint, '-infinity'::timestamptz, 0::bigint
    UNION ALL
      SELECT nxt.id, nxt.locked, w.n_locked + nxt.locked::integer,
             nxt.priority,
             CASE WHEN nxt.run_at > now() THEN 'infinity'::timestamptz ELSE nxt.run_at END,
             CASE WHEN nxt.run_at > now() THEN 9223372036854775807 ELSE nxt.id END
        FROM walk AS w
        CROSS JOIN LATERAL (
          SELECT c.id, c.priority, c.run_at,
                 CASE WHEN c.run_at > now() OR c.id = ANY (v_held) THEN false
                      ELSE pg_catalog.pg_try_advisory_lock(((c.id >> 32)::integer # 1129270870), c.id::bit(32)::integer)
                 END AS locked
            FROM unnest(lock_jobs.queues) AS q(name)
            CROSS JOIN LATERAL (
              SELECT j.id, j.priority, j.run_at
                FROM conveyor.jobs AS j
               WHERE j.queue = q.name
                 AND j.finished_at IS NULL AND j.expired_at IS NULL
                 AND j.priority <= v_ceiling
                 AND (j.priority, j.run_at, j.id) > (w.k_priority, w.k_run_at, w.k_id)
               ORDER BY j.priority, j.run_at, j.id
               LIMIT 1
            ) AS c
           ORDER BY c.priority, c.run_at, c.id
           LIMIT 1
        ) AS nxt
       WHERE w.n_locked < lock_jobs.max_jobs
  )
  SELECT coalesce(array_agg(walk.id), '{}') INTO v_locked FROM walk WHERE walk.locked;

  RETURN QUERY SELECT * FROM conveyor.recheck_locked_jobs(v_locked);
END
$$;

COMMENT ON FUNCTION conveyor.lock_jobs(text[], integer, integer) IS
  'Locks up to max_jobs (default 1) ready jobs for the calling session with session-level '
  'advisory locks and returns their rows, most urgent first: (priority, run_at, id) order '
  'across the given queues (default {default}), only priority <= max_priority when given. '
  'Skips jobs other sessions hold and jobs this session already holds; never locks a future, '
  'finished or expired job; re-reads the locked rows with a fresh snapshot and releases those '
  'another session resolved meanwhile. Cost grows with the rows it steps over (jobs locked by '
  'others, one per priority level of scheduled jobs), not with the backlog. Call it on a '
  'session connection (not through a transaction-mode pooler), outside a long transaction. '
  'Errors: 22004 NULL queues or max_jobs; 22023 empty queues or negative max_jobs.';

CREATE FUNCTION conveyor.lock_jobs_by_id(ids bigint[])
RETURNS SETOF conveyor.jobs
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_held bigint[] := conveyor.held_job_ids();
  v_locked bigint[];
BEGIN
  -- CASE fixes the order: the lock is tried only on rows that are ready and
  -- not already held by this session.
  v_locked := ARRAY(
    SELECT j.id FROM conveyor.jobs AS j
     WHERE j.id = ANY (lock_jobs_by_id.ids)
       AND CASE WHEN j.finished_at IS NULL AND j.expired_at IS NULL AND j.run_at <= now()
                     AND NOT j.id = ANY (v_held)
                THEN pg_catalog.pg_try_advisory_lock(((j.id >> 32)::integer # 1129270870), j.id::bit(32)::integer)
                ELSE false
           END);

  RETURN QUERY SELECT * FROM conveyor.recheck_locked_jobs(v_locked);
END
$$;

COMMENT ON FUNCTION conveyor.lock_jobs_by_id(bigint[]) IS
  'Locks the given jobs, as lock_jobs does, when they are ready and no session holds them; '
  'returns the rows it locked, most urgent first. For jobs announced by NOTIFY: an announced '
  'job may already be gone, taken or resolved, and is then simply not returned.';

REVOKE ALL ON FUNCTION conveyor.recheck_locked_jobs(bigint[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION conveyor.lock_jobs(text[], integer, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION conveyor.lock_jobs_by_id(bigint[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION conveyor.recheck_locked_jobs(bigint[]) TO conveyor_worker;
GRANT EXECUTE ON FUNCTION conveyor.lock_jobs(text[], integer, integer) TO conveyor_worker;
GRANT EXECUTE ON FUNCTION conveyor.lock_jobs_by_id(bigint[]) TO conveyor_worker;

COMMIT;
