-- Deploy conveyor:lock_jobs to pg
-- requires: job_locks

BEGIN;

CREATE FUNCTION conveyor.recheck_locked_jobs(ids bigint[], keep integer DEFAULT NULL)
RETURNS SETOF conveyor.jobs
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
-- A cached generic plan for "id = ANY ($1)" may scan jobs_ready_idx (the
-- whole backlog) when the table's statistics are stale; a plan made for the
-- actual array probes the primary key. Planning costs tens of microseconds
-- per call, a call handles a batch.
SET plan_cache_mode = force_custom_plan
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
     ORDER BY j.priority, j.run_at, j.id
     LIMIT recheck_locked_jobs.keep);

  IF cardinality(v_ready) < cardinality(recheck_locked_jobs.ids) THEN
    PERFORM pg_catalog.pg_advisory_unlock(((i >> 32)::integer # 1129270870), i::bit(32)::integer)
       FROM unnest(recheck_locked_jobs.ids) AS i
      WHERE i NOT IN (SELECT (r).id FROM unnest(v_ready) AS r);
  END IF;

  RETURN QUERY SELECT * FROM unnest(v_ready);
END
$$;

COMMENT ON FUNCTION conveyor.recheck_locked_jobs(bigint[], integer) IS
  'Internal. Given jobs the caller has just locked, returns those still ready, re-read with a '
  'fresh snapshot, most urgent first and at most keep of them (all when NULL), and releases '
  'the locks of the others. Used by lock_jobs and lock_jobs_by_id.';

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
  v_ceiling smallint;
  v_queue text;
  v_after smallint;
  v_jumped boolean;
  v_job record;
  v_count integer;
  v_wanted integer;
  v_round integer;
  v_locked bigint[];
  v_new conveyor.jobs[];
  v_rows conveyor.jobs[] := '{}';
BEGIN
  IF current_setting('transaction_isolation') <> 'read committed' THEN
    -- The recheck after locking needs a snapshot newer than the one the
    -- candidates were read with; above READ COMMITTED a transaction keeps its
    -- first snapshot, and a job resolved meanwhile would be handed out again.
    RAISE EXCEPTION 'conveyor.%: needs READ COMMITTED isolation, not %', 'lock_jobs', current_setting('transaction_isolation')
      USING ERRCODE = '25000',
            HINT = 'Run the locker''s connection at the default isolation level (check default_transaction_isolation).';
  END IF;
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

  -- A job another session resolves between a walk's snapshot and its lock
  -- try is locked, then dropped by the recheck; a short answer would look
  -- like an empty queue to the caller. So walk again, with a new snapshot,
  -- until max_jobs are locked or a walk finds nothing it has to drop.
  FOR v_round IN 1..10 LOOP
    v_locked := '{}';
    v_wanted := lock_jobs.max_jobs - cardinality(v_rows);

    -- Each queue is walked along jobs_ready_idx in (priority, run_at, id)
    -- order. The lock is tried here, row by row, never inside the query, so
    -- however the query is planned no job is locked that is not handed out.
    -- The walk steps over jobs other sessions hold (the try fails) and jobs
    -- this session holds (re-locking would need two unlocks). A job not ready
    -- yet means every later job of that priority is not ready either, so the
    -- walk resumes at the next priority: scheduled jobs cost one step per
    -- priority level, not one per job.
    FOREACH v_queue IN ARRAY ARRAY(SELECT DISTINCT q FROM unnest(lock_jobs.queues) AS q WHERE q IS NOT NULL) LOOP
      v_count := 0;
      v_after := -1;
      <<walk>>
      LOOP
        v_jumped := false;
        FOR v_job IN
          SELECT j.id, j.priority, j.run_at
            FROM conveyor.jobs AS j
           WHERE j.queue = v_queue
             AND j.finished_at IS NULL AND j.expired_at IS NULL
             AND j.priority > v_after AND j.priority <= v_ceiling
           ORDER BY j.priority, j.run_at, j.id
        LOOP
          IF v_job.run_at > now() THEN
            v_after := v_job.priority;
            v_jumped := true;
            EXIT;
          END IF;
          CONTINUE WHEN v_job.id = ANY (v_held);
          IF pg_catalog.pg_try_advisory_lock(((v_job.id >> 32)::integer # 1129270870), v_job.id::bit(32)::integer) THEN
            v_locked := v_locked || v_job.id;
            v_count := v_count + 1;
            EXIT walk WHEN v_count >= v_wanted;
          END IF;
        END LOOP;
        EXIT walk WHEN NOT v_jumped;
      END LOOP;
    END LOOP;

    -- With several queues each gave up to v_wanted; the recheck keeps the
    -- most urgent v_wanted of them all and releases the rest.
    v_new := ARRAY(SELECT r FROM conveyor.recheck_locked_jobs(v_locked, v_wanted) AS r);
    v_rows := v_rows || v_new;
    EXIT WHEN cardinality(v_rows) >= lock_jobs.max_jobs
           OR cardinality(v_new) = cardinality(v_locked);   -- nothing was dropped: the walk ran dry
    v_held := v_held || ARRAY(SELECT (n).id FROM unnest(v_new) AS n);
  END LOOP;

  RETURN QUERY SELECT * FROM unnest(v_rows) AS r ORDER BY r.priority, r.run_at, r.id;
END
$$;

COMMENT ON FUNCTION conveyor.lock_jobs(text[], integer, integer) IS
  'Locks up to max_jobs (default 1) ready jobs for the calling session with session-level '
  'advisory locks and returns their rows, most urgent first: (priority, run_at, id) order '
  'across the given queues (default {default}), only priority <= max_priority when given. '
  'Skips jobs other sessions hold and jobs this session already holds; never locks a future, '
  'finished or expired job; re-reads the locked rows with a fresh snapshot and releases those '
  'another session resolved meanwhile. Cost grows with the rows it steps over (jobs locked by '
  'others, one per priority level of scheduled jobs) and with the number of queues, not with '
  'the backlog. Call it on a session connection (not through a transaction-mode pooler), '
  'outside a long transaction, at READ COMMITTED isolation. Errors: 22004 NULL queues or '
  'max_jobs; 22023 empty queues or negative max_jobs; 25000 a stricter isolation level (the '
  'recheck needs a fresh snapshot).';

CREATE FUNCTION conveyor.lock_jobs_by_id(ids bigint[], queues text[] DEFAULT ARRAY['default'])
RETURNS SETOF conveyor.jobs
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
-- A cached generic plan for "id = ANY ($1)" may scan jobs_ready_idx (the
-- whole backlog) when the table's statistics are stale; a plan made for the
-- actual array probes the primary key. Planning costs tens of microseconds
-- per call, a call handles a batch.
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
  v_held bigint[] := conveyor.held_job_ids();
  v_locked bigint[];
BEGIN
  IF current_setting('transaction_isolation') <> 'read committed' THEN
    -- See lock_jobs.
    RAISE EXCEPTION 'conveyor.%: needs READ COMMITTED isolation, not %', 'lock_jobs_by_id', current_setting('transaction_isolation')
      USING ERRCODE = '25000',
            HINT = 'Run the locker''s connection at the default isolation level (check default_transaction_isolation).';
  END IF;

  -- CASE fixes the order: the lock is tried only on rows that are ready and
  -- not already held by this session.
  v_locked := ARRAY(
    -- id = ANY () matches each row once, however often its id is listed:
    -- locking an id twice would take the re-entrant lock twice.
    SELECT j.id FROM conveyor.jobs AS j
     WHERE j.id = ANY (lock_jobs_by_id.ids)
       -- Anyone who may NOTIFY can name any id: a job of a queue this worker
       -- does not serve is never locked.
       AND j.queue = ANY (lock_jobs_by_id.queues)
       AND CASE WHEN j.finished_at IS NULL AND j.expired_at IS NULL AND j.run_at <= now()
                     AND NOT j.id = ANY (v_held)
                THEN pg_catalog.pg_try_advisory_lock(((j.id >> 32)::integer # 1129270870), j.id::bit(32)::integer)
                ELSE false
           END);

  RETURN QUERY SELECT * FROM conveyor.recheck_locked_jobs(v_locked);
END
$$;

COMMENT ON FUNCTION conveyor.lock_jobs_by_id(bigint[], text[]) IS
  'Locks the given jobs, as lock_jobs does, when they are ready, belong to one of the given '
  'queues (default {default}) and no session holds them; '
  'returns the rows it locked, most urgent first. For jobs announced by NOTIFY: an announced '
  'job may already be gone, taken or resolved, and is then simply not returned. Needs READ '
  'COMMITTED isolation, as lock_jobs does (25000 otherwise).';

REVOKE ALL ON FUNCTION conveyor.recheck_locked_jobs(bigint[], integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION conveyor.lock_jobs(text[], integer, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION conveyor.lock_jobs_by_id(bigint[], text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION conveyor.recheck_locked_jobs(bigint[], integer) TO conveyor_worker;
GRANT EXECUTE ON FUNCTION conveyor.lock_jobs(text[], integer, integer) TO conveyor_worker;
GRANT EXECUTE ON FUNCTION conveyor.lock_jobs_by_id(bigint[], text[]) TO conveyor_worker;

COMMIT;
