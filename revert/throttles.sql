-- Revert conveyor:throttles from pg

BEGIN;

-- Back to the definitions of the changes flow_control (lock_jobs,
-- lock_jobs_by_id, set_concurrency_limit and its comment) and flow_followups
-- (set_concurrency_limit's grant to conveyor_admin), exactly.

DROP FUNCTION conveyor.set_concurrency_limit(text, integer, integer, integer, interval);
CREATE FUNCTION conveyor.set_concurrency_limit(key text, perform_limit integer DEFAULT NULL, enqueue_limit integer DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
  IF set_concurrency_limit.key IS NULL THEN
    RAISE EXCEPTION 'conveyor.set_concurrency_limit: key must not be NULL' USING ERRCODE = '22004';
  ELSIF set_concurrency_limit.key = '' OR set_concurrency_limit.key = '*' THEN
    RAISE EXCEPTION 'conveyor.set_concurrency_limit: key must not be empty' USING ERRCODE = '22023';
  ELSIF char_length(set_concurrency_limit.key) > 500 THEN
    RAISE EXCEPTION 'conveyor.set_concurrency_limit: key must be at most 500 characters, not %', char_length(set_concurrency_limit.key)
      USING ERRCODE = '22001';
  ELSIF set_concurrency_limit.perform_limit IS NULL AND set_concurrency_limit.enqueue_limit IS NULL THEN
    RAISE EXCEPTION 'conveyor.set_concurrency_limit: give perform_limit or enqueue_limit'
      USING ERRCODE = '22023', HINT = 'delete_concurrency_limit(key) removes a key''s limits.';
  ELSIF set_concurrency_limit.perform_limit < 0 OR set_concurrency_limit.enqueue_limit < 0 THEN
    RAISE EXCEPTION 'conveyor.set_concurrency_limit: limits must not be negative' USING ERRCODE = '22023';
  END IF;
  INSERT INTO conveyor.concurrency_limits AS c (key, perform_limit, enqueue_limit)
  VALUES (set_concurrency_limit.key, set_concurrency_limit.perform_limit, set_concurrency_limit.enqueue_limit)
  ON CONFLICT (key) DO UPDATE
    SET perform_limit = excluded.perform_limit, enqueue_limit = excluded.enqueue_limit, updated_at = now();
END
$$;

COMMENT ON FUNCTION conveyor.set_concurrency_limit(text, integer, integer) IS
  'Sets the limits of a concurrency_key (or of each key starting with a prefix, given as '
  '''prefix*''), replacing those it had: perform_limit, the most jobs of the key locked at once '
  'across all sessions (lock_jobs holds the others back; a worker''s session that ends frees its '
  'share at once); enqueue_limit, the most unresolved jobs of the key not running (enqueue '
  'beyond it inserts nothing and returns NULL). NULL: no such limit. Errors: 22004 a NULL key; '
  '22023 an empty key, both limits NULL, a negative limit; 22001 a key over 500 characters.';

REVOKE ALL ON FUNCTION conveyor.set_concurrency_limit(text, integer, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION conveyor.set_concurrency_limit(text, integer, integer) TO conveyor_admin;

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
  v_taken bigint[];
  v_state text;
  -- Flow control, read once per call: the queues paused as a whole, the
  -- pauses that name a class or a label (NULL: none), whether any key has
  -- limits, the keys found full during this call.
  v_paused_queues text[];
  v_row_pauses conveyor.pauses[];
  v_limited boolean;
  v_limit conveyor.concurrency_limits;
  v_full_keys text[] := '{}';
  v_flow boolean;
  v_got boolean;
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
  -- From here on, a failure (a cancel, statement_timeout, a full lock
  -- table, any error) gives back every lock this call took: see the
  -- handler at the end.
  BEGIN
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

  -- One statement for all of flow control; with nothing paused or limited
  -- the walk below is the one before flow control plus three NULL tests a row.
  SELECT coalesce(array_agg(p.queue) FILTER (WHERE p.job_class IS NULL AND p.label IS NULL), '{}'),
         array_agg(p) FILTER (WHERE p.job_class IS NOT NULL OR p.label IS NOT NULL),
         EXISTS (SELECT FROM conveyor.concurrency_limits)
    INTO v_paused_queues, v_row_pauses, v_limited
    FROM conveyor.pauses AS p
   -- Always true, but lets the primary key serve the read: a sequential scan,
   -- which enable_seqscan = off prices at 10^10, would make the plan worth
   -- compiling by JIT (tens of milliseconds a call).
   WHERE p.id > 0;
  v_flow := v_row_pauses IS NOT NULL OR v_limited;

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
    FOREACH v_queue IN ARRAY ARRAY(SELECT DISTINCT q FROM unnest(lock_jobs.queues) AS q
                                    WHERE q IS NOT NULL AND NOT q = ANY (v_paused_queues)) LOOP
      v_count := 0;
      v_after := -1;
      <<walk>>
      LOOP
        v_jumped := false;
        FOR v_job IN
          SELECT j.id, j.priority, j.run_at, j.job_class, j.labels, j.concurrency_key
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
          IF NOT v_flow THEN
            -- Nothing paused by class or label, no limits: the test before flow control.
            v_got := pg_catalog.pg_try_advisory_lock(conveyor.job_lock_key1(v_job.id), conveyor.job_lock_key2(v_job.id));
          ELSE
            -- Held back (paused, or its key at its limit): step over it, so
            -- that it blocks none of the ready jobs behind it.
            CONTINUE WHEN v_row_pauses IS NOT NULL
                      AND conveyor.job_paused(v_row_pauses, v_queue, v_job.job_class, v_job.labels);
            CONTINUE WHEN v_job.concurrency_key = ANY (v_full_keys);
            v_limit := NULL;
            IF v_job.concurrency_key IS NOT NULL AND v_limited THEN
              v_limit := conveyor.concurrency_limit_for(v_job.concurrency_key);
            END IF;
            IF v_limit.perform_limit IS NULL THEN
              v_got := pg_catalog.pg_try_advisory_lock(conveyor.job_lock_key1(v_job.id), conveyor.job_lock_key2(v_job.id));
            ELSE
              v_got := conveyor.try_lock_limited_job(v_job.id, v_job.concurrency_key, v_limit.perform_limit);
              IF v_got IS NULL THEN
                -- Full: no more of this key in this call (only this call's
                -- own locks could change the count, and they only add).
                v_full_keys := v_full_keys || v_job.concurrency_key;
                v_got := false;
              END IF;
            END IF;
          END IF;
          IF v_got THEN
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
  EXCEPTION WHEN query_canceled OR OTHERS THEN  -- OTHERS does not catch query_canceled
    -- The locks this call took are the jobs the session holds now and did
    -- not hold before: v_held lists those it held, and those it kept from
    -- earlier rounds (v_kept). Not v_kept || v_locked: a cancel can land
    -- between a lock try and the statement that records it. The walk never
    -- locks a job the session held before, so each of these is held once.
    -- = ANY, not sorted_array_contains: v_held may not be sorted yet.
    v_taken := ARRAY(SELECT t FROM unnest(conveyor.held_job_ids()) AS t
                      WHERE v_held IS NOT NULL  -- else the call failed before it locked anything
                        AND (NOT t = ANY (v_held) OR t = ANY (v_kept)));
    PERFORM pg_catalog.pg_advisory_unlock(conveyor.job_lock_key1(t), conveyor.job_lock_key2(t))
       FROM unnest(v_taken) AS t;
    GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE;
    IF v_state = '53200' THEN
      RAISE EXCEPTION 'conveyor.lock_jobs: the server''s lock table is full (out of shared memory) after this call locked % jobs; it released them', cardinality(v_taken)
        USING ERRCODE = '53200',
              HINT = 'Lock fewer jobs at a time (max_jobs, the worker''s --maximum-buffer-size) or raise max_locks_per_transaction: '
                     'all sessions share about max_locks_per_transaction * (max_connections + max_prepared_transactions) locks.';
    END IF;
    RAISE;
  END;
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
  'while given held count as held without being listed. A call that fails (cancelled, '
  'statement_timeout, any error) releases the locks it took before raising the error: the '
  'session holds what it held before. Flow control: never locks a paused job (conveyor.pauses) '
  'nor more jobs of a concurrency_key than its perform_limit (conveyor.concurrency_limits) across '
  'all sessions; such jobs are stepped over, not blocking the jobs behind them. Errors: 22004 NULL queues or max_jobs; 22023 empty '
  'queues or negative max_jobs; 25000 a stricter isolation level (the recheck needs a fresh '
  'snapshot); 53200 the server''s lock table is full (lock fewer jobs per call or raise '
  'max_locks_per_transaction).';

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
  v_taken bigint[];
  v_flow boolean;
  v_row_pauses conveyor.pauses[];
  v_job record;
  v_limit conveyor.concurrency_limits;
  v_got boolean;
BEGIN
  PERFORM conveyor.require_read_committed('lock_jobs_by_id');

  -- As in lock_jobs: a failure gives back every lock this call took.
  BEGIN

  IF lock_jobs_by_id.held IS NULL THEN
    v_held := conveyor.held_job_ids();
  ELSE
    v_held := lock_jobs_by_id.held || conveyor.locked_in_transaction();
  END IF;

  -- (id > 0: as in lock_jobs, the primary key serves the read.)
  v_flow := EXISTS (SELECT FROM conveyor.pauses AS p WHERE p.id > 0) OR EXISTS (SELECT FROM conveyor.concurrency_limits);
  IF v_flow THEN
    -- Something is paused or limited: one job at a time, most urgent first,
    -- with the tests of lock_jobs' walk.
    v_row_pauses := ARRAY(SELECT p FROM conveyor.pauses AS p WHERE p.id > 0);
    v_locked := '{}';
    FOR v_job IN
      SELECT j.id, j.queue, j.job_class, j.labels, j.concurrency_key
        FROM conveyor.jobs AS j
       WHERE j.id = ANY (lock_jobs_by_id.ids)
         AND j.queue = ANY (lock_jobs_by_id.queues)
         AND j.finished_at IS NULL AND j.expired_at IS NULL AND j.run_at <= now()
         AND NOT j.id = ANY (v_held)
       ORDER BY j.priority, j.run_at, j.id
    LOOP
      CONTINUE WHEN conveyor.job_paused(v_row_pauses, v_job.queue, v_job.job_class, v_job.labels);
      v_limit := CASE WHEN v_job.concurrency_key IS NOT NULL THEN conveyor.concurrency_limit_for(v_job.concurrency_key) END;
      IF v_limit.perform_limit IS NULL THEN
        v_got := pg_catalog.pg_try_advisory_lock(conveyor.job_lock_key1(v_job.id), conveyor.job_lock_key2(v_job.id));
      ELSE
        v_got := conveyor.try_lock_limited_job(v_job.id, v_job.concurrency_key, v_limit.perform_limit);
      END IF;
      IF v_got THEN
        v_locked := v_locked || v_job.id;
      END IF;
    END LOOP;
  ELSE
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
  END IF;

  v_kept := ARRAY(SELECT conveyor.recheck_locked_jobs(v_locked));
  IF lock_jobs_by_id.held IS NOT NULL AND cardinality(v_kept) > 0 THEN
    PERFORM conveyor.locked_in_transaction(v_kept);
  END IF;

  RETURN QUERY
  SELECT j.* FROM conveyor.jobs AS j
   WHERE j.id = ANY (v_kept)
   ORDER BY j.priority, j.run_at, j.id;
  EXCEPTION WHEN query_canceled OR OTHERS THEN  -- OTHERS does not catch query_canceled
    -- The lock statement may have failed part-way, before v_locked was
    -- set: the locks this call took are the given jobs the session holds
    -- now and did not hold before.
    v_taken := conveyor.held_job_ids();
    v_taken := ARRAY(SELECT DISTINCT t FROM unnest(lock_jobs_by_id.ids) AS t
                      WHERE t = ANY (v_taken) AND NOT t = ANY (v_held));  -- none while v_held is NULL
    PERFORM pg_catalog.pg_advisory_unlock(conveyor.job_lock_key1(t), conveyor.job_lock_key2(t))
       FROM unnest(v_taken) AS t;
    RAISE;
  END;
END
$$;

COMMENT ON FUNCTION conveyor.lock_jobs_by_id(bigint[], text[], bigint[]) IS
  'Locks the given jobs, as lock_jobs does, when they are ready, belong to one of the given '
  'queues (default {default}) and no session holds them; '
  'returns the rows it locked, most urgent first. For jobs announced by NOTIFY: an announced '
  'job may already be gone, taken or resolved, and is then simply not returned. Needs READ '
  'COMMITTED isolation, as lock_jobs does (25000 otherwise). held: as for lock_jobs. A call '
  'that fails releases the locks it took, as lock_jobs does. Obeys pauses and perform limits as '
  'lock_jobs does.';

DROP TRIGGER _900_flow_in_use ON conveyor.pauses;
DROP TRIGGER _900_flow_in_use ON conveyor.concurrency_limits;
DROP FUNCTION conveyor.tg_flow__in_use();
DROP FUNCTION conveyor.flow_in_use();
DROP FUNCTION conveyor.notify_throttle_wake(timestamptz);
DROP FUNCTION conveyor.try_lock_flow_job(bigint, text);
DROP FUNCTION conveyor.give_back_throttle_slot(text, timestamptz);
DROP FUNCTION conveyor.take_throttle_slot(text, integer, interval);
DROP TABLE conveyor.throttle_starts;

ALTER TABLE conveyor.concurrency_limits
  DROP COLUMN perform_throttle,
  DROP COLUMN throttle_period;

COMMENT ON TABLE conveyor.concurrency_limits IS
  'Limits per concurrency_key. key is a job''s concurrency_key, or a prefix ending in * '
  '(''report-*'') whose limits apply to each key it starts, separately; an exact key wins over '
  'a prefix, a longer prefix over a shorter. Write through set_concurrency_limit and '
  'delete_concurrency_limit.';

COMMIT;
