-- Revert conveyor:lock_jobs from pg

BEGIN;

-- Back to v0.1.0's lock_jobs and lock_jobs_by_id (deploy/lock_jobs@v0.1.0.sql).
CREATE OR REPLACE FUNCTION conveyor.lock_jobs(
  queues text[] DEFAULT ARRAY['default'],
  max_jobs integer DEFAULT 1,
  max_priority integer DEFAULT NULL,
  held bigint[] DEFAULT NULL
)
RETURNS SETOF conveyor.jobs
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
-- Plans once per session that never scan the jobs table: see recheck_locked_jobs.
SET enable_seqscan = off
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
  -- At most this many walks per call. A walk after the first happens only
  -- when the recheck dropped jobs that other sessions resolved between the
  -- walk's snapshot and its lock tries; ten such races in a row mean the queue
  -- is being drained as fast as it is read, and handing out what is kept (the
  -- caller polls again) beats spinning on it.
  c_max_rounds CONSTANT integer := 10;
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
  v_new bigint[];
  v_kept bigint[] := '{}';
BEGIN
  -- Outline:
  --   1. rounds: up to c_max_rounds walks, each with a new snapshot;
  --   2. queues: each round walks every queue asked for;
  --   3. walk: along jobs_ready_idx in (priority, run_at, id) order, trying
  --      each row's lock, jumping to the next priority at a future job;
  --   4. recheck: re-read what was locked, keep the most urgent still-ready
  --      ones, release the rest; walk again only if a race dropped some;
  --   5. return the kept rows, read once.
  PERFORM conveyor.require_read_committed('lock_jobs');
  IF lock_jobs.queues IS NULL OR lock_jobs.max_jobs IS NULL THEN
    RAISE EXCEPTION 'conveyor.lock_jobs: queues and max_jobs must not be NULL' USING ERRCODE = '22004';
  ELSIF cardinality(lock_jobs.queues) = 0 THEN
    RAISE EXCEPTION 'conveyor.lock_jobs: queues must name at least one queue' USING ERRCODE = '22023';
  ELSIF lock_jobs.max_jobs < 0 THEN
    RAISE EXCEPTION 'conveyor.lock_jobs: max_jobs must not be negative, not %', lock_jobs.max_jobs USING ERRCODE = '22023';
  ELSIF lock_jobs.max_jobs = 0 OR lock_jobs.max_priority < 0 THEN
    RETURN;
  END IF;
  v_ceiling := least(coalesce(lock_jobs.max_priority, conveyor.job_limit('priority')), conveyor.job_limit('priority'));
  IF lock_jobs.held IS NULL THEN
    v_held := conveyor.held_job_ids();
  ELSE
    v_held := lock_jobs.held || conveyor.locked_in_transaction();
  END IF;
  -- Sorted, so that the walk tests a row against it by binary search
  -- (sorted_array_contains) instead of a scan of the whole list: under a backlog the
  -- walk steps over every held job, and held times walked rows made a
  -- 500-job cycle cost a millisecond more.
  v_held := ARRAY(SELECT h FROM unnest(v_held) AS h WHERE h IS NOT NULL ORDER BY 1);

  -- A job another session resolves between a walk's snapshot and its lock
  -- try is locked, then dropped by the recheck; a short answer would look
  -- like an empty queue to the caller. So walk again, with a new snapshot,
  -- until max_jobs are locked or a walk finds nothing it has to drop.
  FOR v_round IN 1..c_max_rounds LOOP
    v_locked := '{}';
    v_wanted := lock_jobs.max_jobs - cardinality(v_kept);

    -- Each queue is walked along jobs_ready_idx in (priority, run_at, id)
    -- order. The lock is tried here, row by row, never inside the query, so
    -- however the query is planned no job is locked that is not handed out.
    -- The walk steps over jobs other sessions hold (the try fails); jobs this
    -- session holds (re-locking would need two unlocks) are left out by the
    -- query, which tests them faster than a PL/pgSQL statement per row would
    -- (under a backlog they are the first rows of the walk). A job not ready
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
             AND NOT conveyor.sorted_array_contains(v_held, j.id)
           ORDER BY j.priority, j.run_at, j.id
        LOOP
          IF v_job.run_at > now() THEN
            v_after := v_job.priority;
            v_jumped := true;
            EXIT;
          END IF;
          IF pg_catalog.pg_try_advisory_lock(conveyor.job_lock_key1(v_job.id), conveyor.job_lock_key2(v_job.id)) THEN
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
    v_new := ARRAY(SELECT conveyor.recheck_locked_jobs(v_locked, v_wanted));
    v_kept := v_kept || v_new;
    EXIT WHEN cardinality(v_kept) >= lock_jobs.max_jobs
           OR cardinality(v_new) = cardinality(v_locked);   -- nothing was dropped: the walk ran dry
    v_held := ARRAY(SELECT h FROM unnest(v_held || v_new) AS h ORDER BY 1);
  END LOOP;

  IF lock_jobs.held IS NOT NULL AND cardinality(v_kept) > 0 THEN
    PERFORM conveyor.locked_in_transaction(v_kept);
  END IF;

  -- The rows, read once: no session resolves a job whose lock this one holds.
  RETURN QUERY
  SELECT j.* FROM conveyor.jobs AS j
   WHERE j.id = ANY (v_kept)
   ORDER BY j.priority, j.run_at, j.id;
END
$$;

COMMENT ON FUNCTION conveyor.lock_jobs(text[], integer, integer, bigint[]) IS
  'Locks up to max_jobs (default 1) ready jobs for the calling session with session-level '
  'advisory locks and returns their rows, most urgent first: (priority, run_at, id) order '
  'across the given queues (default {default}), only priority <= max_priority when given. '
  'Skips jobs other sessions hold and jobs this session already holds; never locks a future, '
  'finished or expired job; re-reads the locked rows with a fresh snapshot and releases those '
  'another session resolved meanwhile. Cost grows with the rows it steps over (jobs locked by '
  'others, one per priority level of scheduled jobs) and with the number of queues, not with '
  'the backlog. Call it on a session connection (not through a transaction-mode pooler), '
  'outside a long transaction, at READ COMMITTED isolation. held (optional): the ids of the '
  'jobs the caller knows its session holds, including those it released earlier in the same '
  'transaction (their transaction-level locks remain); it replaces the pg_locks read (a few '
  'hundred microseconds a call), so it must be complete: a held job left out is locked a '
  'second time. Jobs that lock_jobs and lock_jobs_by_id locked earlier in the same transaction '
  'while given held count as held without being listed. Errors: 22004 NULL queues or '
  'max_jobs; 22023 empty queues or negative max_jobs; 25000 a stricter isolation level (the '
  'recheck needs a fresh snapshot).';

CREATE OR REPLACE FUNCTION conveyor.lock_jobs_by_id(
  ids bigint[],
  queues text[] DEFAULT ARRAY['default'],
  held bigint[] DEFAULT NULL
)
RETURNS SETOF conveyor.jobs
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
-- Plans once per session that never scan the jobs table: see recheck_locked_jobs.
SET enable_seqscan = off
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
  v_held bigint[];
  v_locked bigint[];
  v_kept bigint[];
BEGIN
  PERFORM conveyor.require_read_committed('lock_jobs_by_id');

  IF lock_jobs_by_id.held IS NULL THEN
    v_held := conveyor.held_job_ids();
  ELSE
    v_held := lock_jobs_by_id.held || conveyor.locked_in_transaction();
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
                THEN pg_catalog.pg_try_advisory_lock(conveyor.job_lock_key1(j.id), conveyor.job_lock_key2(j.id))
                ELSE false
           END);

  v_kept := ARRAY(SELECT conveyor.recheck_locked_jobs(v_locked));
  IF lock_jobs_by_id.held IS NOT NULL AND cardinality(v_kept) > 0 THEN
    PERFORM conveyor.locked_in_transaction(v_kept);
  END IF;

  RETURN QUERY
  SELECT j.* FROM conveyor.jobs AS j
   WHERE j.id = ANY (v_kept)
   ORDER BY j.priority, j.run_at, j.id;
END
$$;

COMMENT ON FUNCTION conveyor.lock_jobs_by_id(bigint[], text[], bigint[]) IS
  'Locks the given jobs, as lock_jobs does, when they are ready, belong to one of the given '
  'queues (default {default}) and no session holds them; '
  'returns the rows it locked, most urgent first. For jobs announced by NOTIFY: an announced '
  'job may already be gone, taken or resolved, and is then simply not returned. Needs READ '
  'COMMITTED isolation, as lock_jobs does (25000 otherwise). held: as for lock_jobs.';

COMMIT;
