-- Deploy conveyor:throttles to pg
-- requires: flow_followups

BEGIN;

-- Throttles (GoodJob's perform_throttle): at most N starts of a
-- concurrency_key's jobs in any period. Unlike perform_limit, this needs
-- memory of the past -- when the key's last N jobs were locked -- which no
-- lock can hold: it is kept in a row per key (conveyor.throttle_starts),
-- written by the locker that takes a start, under the key's
-- transaction-level advisory lock so that two lockers never both take the
-- last start of a window (docs/background.md, "Throttles").

ALTER TABLE conveyor.concurrency_limits
  ADD COLUMN perform_throttle integer,
  ADD COLUMN throttle_period interval,
  ADD CONSTRAINT concurrency_limits_throttle_complete
    CHECK ((perform_throttle IS NULL) = (throttle_period IS NULL)),
  ADD CONSTRAINT concurrency_limits_perform_throttle_in_range
    CHECK (perform_throttle BETWEEN 1 AND 1000),
  ADD CONSTRAINT concurrency_limits_throttle_period_positive
    CHECK (throttle_period > interval '0');

COMMENT ON TABLE conveyor.concurrency_limits IS
  'Limits per concurrency_key. key is a job''s concurrency_key, or a prefix ending in * '
  '(''report-*'') whose limits apply to each key it starts, separately; an exact key wins over '
  'a prefix, a longer prefix over a shorter. Write through set_concurrency_limit and '
  'delete_concurrency_limit.';
COMMENT ON COLUMN conveyor.concurrency_limits.perform_throttle IS
  'NULL (no throttle) or the most jobs of the key (of each key, for a prefix) that start -- are '
  'locked by lock_jobs or lock_jobs_by_id -- within any throttle_period; 1 to 1000.';
COMMENT ON COLUMN conveyor.concurrency_limits.throttle_period IS
  'The period of perform_throttle (positive); set with it, or both NULL.';

-- Each throttled key's recent starts. A row per key, not per start: a
-- start rewrites the key's row (a HOT update: no index changes), and the
-- N-th most recent start, which decides, is the array's first element.
CREATE TABLE conveyor.throttle_starts (
  key    text          PRIMARY KEY,
  starts timestamptz[] NOT NULL
);

-- Past about 250 starts the array no longer fits inline and is stored out
-- of line at every start; the default storage would also compress it
-- (pglz) each time, which made a start at 1,000 three times as costly
-- (docs/performance.md, "Flow control on the hot path"). Timestamps hardly
-- compress: store them as they are.
ALTER TABLE conveyor.throttle_starts ALTER COLUMN starts SET STORAGE EXTERNAL;

COMMENT ON TABLE conveyor.throttle_starts IS
  'Internal. The recent starts of each throttled concurrency_key: starts holds the times '
  '(clock_timestamp(), ascending) of at most perform_throttle of its latest lockings. Written '
  'by take_throttle_slot and give_back_throttle_slot only, under the key''s transaction-level '
  'advisory lock. A row whose last start is older than the key''s throttle_period says nothing '
  'any more and may be deleted.';
COMMENT ON COLUMN conveyor.throttle_starts.key IS 'A concurrency_key (never a prefix*).';
COMMENT ON COLUMN conveyor.throttle_starts.starts IS 'Its latest starts, oldest first.';

REVOKE ALL ON conveyor.throttle_starts FROM PUBLIC;
GRANT SELECT ON conveyor.throttle_starts TO conveyor_admin;

-- Decide one start of a throttled key. The key's lock is transaction-level:
-- the row written here is seen by the next decider only once this
-- transaction commits, so the lock must last as long. It is only tried,
-- never waited for: a locker holding it until its transaction ends (a
-- worker's cycle: milliseconds) makes the others step over the key for this
-- call and come back shortly, and lockers can never deadlock on two keys.
CREATE FUNCTION conveyor.take_throttle_slot(
  key text, perform_throttle integer, throttle_period interval,
  OUT taken boolean, OUT at timestamptz)
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  c_busy_retry CONSTANT interval := interval '20 milliseconds';
  v_starts timestamptz[];
  v_count integer;
  v_oldest timestamptz;
BEGIN
  IF NOT pg_catalog.pg_try_advisory_xact_lock(conveyor.concurrency_key_lock('throttle', take_throttle_slot.key)) THEN
    taken := false;
    at := pg_catalog.clock_timestamp() + c_busy_retry;
    RETURN;
  END IF;
  -- A new statement: in READ COMMITTED it sees what the previous holder of
  -- the key's lock committed (its commit came before its lock was released).
  SELECT t.starts INTO v_starts FROM conveyor.throttle_starts AS t WHERE t.key = take_throttle_slot.key;
  v_count := coalesce(cardinality(v_starts), 0);
  at := pg_catalog.clock_timestamp();
  IF v_count >= take_throttle_slot.perform_throttle THEN
    -- The N-th most recent start: within the period, the window is full
    -- until it is a period old.
    v_oldest := v_starts[v_count - take_throttle_slot.perform_throttle + 1];
    IF v_oldest > at - take_throttle_slot.throttle_period THEN
      taken := false;
      at := v_oldest + take_throttle_slot.throttle_period;
      RETURN;
    END IF;
  END IF;
  -- Keep the last N starts, this one included (fewer once N is lowered).
  v_starts := coalesce(v_starts, '{}') || at;
  v_count := cardinality(v_starts);
  IF v_count > take_throttle_slot.perform_throttle THEN
    v_starts := v_starts[v_count - take_throttle_slot.perform_throttle + 1 : v_count];
  END IF;
  INSERT INTO conveyor.throttle_starts AS t (key, starts)
  VALUES (take_throttle_slot.key, v_starts)
  ON CONFLICT ON CONSTRAINT throttle_starts_pkey DO UPDATE SET starts = excluded.starts;
  taken := true;
END
$$;

COMMENT ON FUNCTION conveyor.take_throttle_slot(text, integer, interval) IS
  'Internal. Takes one start of a throttled concurrency_key for a job the caller has just '
  'locked: under the key''s transaction-level advisory lock (held until the caller''s '
  'transaction ends), if fewer than perform_throttle of the key''s recorded starts fall within '
  'the last throttle_period, records one now and returns (true, its time); else returns '
  '(false, when the window opens: the N-th most recent start plus the period). When another '
  'transaction is deciding for the key (its lock is taken), returns (false, in 20 ms) without '
  'waiting. SECURITY DEFINER: workers write throttle_starts only through it. Used by lock_jobs '
  'and lock_jobs_by_id.';

CREATE FUNCTION conveyor.give_back_throttle_slot(key text, at timestamptz)
RETURNS void
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  -- One occurrence only: two starts of the key may share a timestamp.
  UPDATE conveyor.throttle_starts AS t
     SET starts = t.starts[:array_position(t.starts, give_back_throttle_slot.at) - 1]
                  || t.starts[array_position(t.starts, give_back_throttle_slot.at) + 1:]
   WHERE t.key = give_back_throttle_slot.key
     AND give_back_throttle_slot.at = ANY (t.starts);
END
$$;

COMMENT ON FUNCTION conveyor.give_back_throttle_slot(text, timestamptz) IS
  'Internal. Removes a start that take_throttle_slot recorded in the caller''s transaction (which '
  'still holds the key''s lock) for a job it then did not hand out: the recheck dropped it, or '
  'lock_jobs kept more urgent jobs of other queues. Used by lock_jobs and lock_jobs_by_id.';

REVOKE ALL ON FUNCTION conveyor.take_throttle_slot(text, integer, interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION conveyor.give_back_throttle_slot(text, timestamptz) FROM PUBLIC;
-- lock_jobs is SECURITY INVOKER: the worker runs its helpers.
GRANT EXECUTE ON FUNCTION conveyor.take_throttle_slot(text, integer, interval) TO conveyor_worker;
GRANT EXECUTE ON FUNCTION conveyor.give_back_throttle_slot(text, timestamptz) TO conveyor_worker;

-- set_concurrency_limit gains the throttle (a new signature: drop and
-- create, with the grants of flow_control and flow_followups).
DROP FUNCTION conveyor.set_concurrency_limit(text, integer, integer);
CREATE FUNCTION conveyor.set_concurrency_limit(
  key text,
  perform_limit integer DEFAULT NULL,
  enqueue_limit integer DEFAULT NULL,
  perform_throttle integer DEFAULT NULL,
  throttle_period interval DEFAULT NULL
)
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
  ELSIF set_concurrency_limit.perform_limit IS NULL AND set_concurrency_limit.enqueue_limit IS NULL
        AND set_concurrency_limit.perform_throttle IS NULL THEN
    RAISE EXCEPTION 'conveyor.set_concurrency_limit: give perform_limit, enqueue_limit or perform_throttle'
      USING ERRCODE = '22023', HINT = 'delete_concurrency_limit(key) removes a key''s limits.';
  ELSIF set_concurrency_limit.perform_limit < 0 OR set_concurrency_limit.enqueue_limit < 0 THEN
    RAISE EXCEPTION 'conveyor.set_concurrency_limit: limits must not be negative' USING ERRCODE = '22023';
  ELSIF (set_concurrency_limit.perform_throttle IS NULL) <> (set_concurrency_limit.throttle_period IS NULL) THEN
    RAISE EXCEPTION 'conveyor.set_concurrency_limit: give perform_throttle and throttle_period together'
      USING ERRCODE = '22023', HINT = 'For example perform_throttle => 10, throttle_period => ''1 minute''.';
  ELSIF set_concurrency_limit.perform_throttle NOT BETWEEN 1 AND 1000 THEN
    RAISE EXCEPTION 'conveyor.set_concurrency_limit: perform_throttle must be between 1 and 1000, not %', set_concurrency_limit.perform_throttle
      USING ERRCODE = '22023', HINT = 'For a higher rate, throttle a shorter period.';
  ELSIF set_concurrency_limit.throttle_period <= interval '0' THEN
    RAISE EXCEPTION 'conveyor.set_concurrency_limit: throttle_period must be positive, not %', set_concurrency_limit.throttle_period
      USING ERRCODE = '22023';
  END IF;
  INSERT INTO conveyor.concurrency_limits AS c (key, perform_limit, enqueue_limit, perform_throttle, throttle_period)
  VALUES (set_concurrency_limit.key, set_concurrency_limit.perform_limit, set_concurrency_limit.enqueue_limit,
          set_concurrency_limit.perform_throttle, set_concurrency_limit.throttle_period)
  ON CONFLICT (key) DO UPDATE
    SET perform_limit = excluded.perform_limit, enqueue_limit = excluded.enqueue_limit,
        perform_throttle = excluded.perform_throttle, throttle_period = excluded.throttle_period,
        updated_at = now();
END
$$;

COMMENT ON FUNCTION conveyor.set_concurrency_limit(text, integer, integer, integer, interval) IS
  'Sets the limits of a concurrency_key (or of each key starting with a prefix, given as '
  '''prefix*''), replacing those it had: perform_limit, the most jobs of the key locked at once '
  'across all sessions (lock_jobs holds the others back; a worker''s session that ends frees its '
  'share at once); enqueue_limit, the most unresolved jobs of the key not running (enqueue '
  'beyond it inserts nothing and returns NULL); perform_throttle and throttle_period, the most '
  'jobs of the key that start (are locked) within any such period (1 to 1000 of them; lock_jobs '
  'holds the others back until the window allows, and tells a listening worker when). NULL: '
  'no such limit. Errors: 22004 a NULL key; 22023 an empty key, no limit given, a negative '
  'limit, a throttle without its period or the other way round, perform_throttle outside 1 to '
  '1000, a period not positive; 22001 a key over 500 characters.';

REVOKE ALL ON FUNCTION conveyor.set_concurrency_limit(text, integer, integer, integer, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION conveyor.set_concurrency_limit(text, integer, integer, integer, interval) TO conveyor_admin;

-- One job of a concurrency_key with limits, in the walk of lock_jobs or
-- lock_jobs_by_id: its perform_limit, then its throttle.
CREATE FUNCTION conveyor.try_lock_flow_job(
  id bigint, key text,
  OUT locked boolean, OUT key_full boolean, OUT started_at timestamptz, OUT wake_at timestamptz)
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_limit conveyor.concurrency_limits := conveyor.concurrency_limit_for(try_lock_flow_job.key);
  v_slot record;
BEGIN
  key_full := false;
  IF v_limit.perform_limit IS NULL THEN
    locked := pg_catalog.pg_try_advisory_lock(conveyor.job_lock_key1(try_lock_flow_job.id), conveyor.job_lock_key2(try_lock_flow_job.id));
  ELSE
    locked := conveyor.try_lock_limited_job(try_lock_flow_job.id, try_lock_flow_job.key, v_limit.perform_limit);
    IF locked IS NULL THEN
      locked := false;
      key_full := true;
      RETURN;
    END IF;
  END IF;
  -- The job's lock first (it may be another session's), then the start:
  -- a start is taken only for a job this call holds.
  IF locked AND v_limit.perform_throttle IS NOT NULL THEN
    SELECT * INTO v_slot
      FROM conveyor.take_throttle_slot(try_lock_flow_job.key, v_limit.perform_throttle, v_limit.throttle_period);
    IF v_slot.taken THEN
      started_at := v_slot.at;
    ELSE
      PERFORM pg_catalog.pg_advisory_unlock(conveyor.job_lock_key1(try_lock_flow_job.id), conveyor.job_lock_key2(try_lock_flow_job.id));
      locked := false;
      key_full := true;
      wake_at := v_slot.at;
    END IF;
  END IF;
END
$$;

COMMENT ON FUNCTION conveyor.try_lock_flow_job(bigint, text) IS
  'Internal. Tries the advisory lock of a job with a concurrency_key, obeying the key''s limits '
  '(concurrency_limit_for): its perform_limit (try_lock_limited_job), then its throttle '
  '(take_throttle_slot; a job whose start is refused is unlocked again). Returns locked (the '
  'session now holds the job), key_full (the key takes no more jobs in this call), started_at '
  '(the throttle start recorded for the job, else NULL) and wake_at (when the key''s throttle '
  'window opens, when that held the job back). Used by lock_jobs and lock_jobs_by_id.';

-- A worker that a throttle held back polls when the window opens, not at its
-- next poll interval: lock_jobs tells its own session, on the channel the
-- worker listens on (docs/reference/protocol.md). A relative delay, so
-- that the worker's clock need not agree with the server's.
CREATE FUNCTION conveyor.notify_throttle_wake(at timestamptz)
RETURNS void
LANGUAGE sql
VOLATILE
SET search_path = pg_catalog, pg_temp
RETURN (SELECT pg_catalog.pg_notify(
          'conveyor_worker_' || pg_catalog.pg_backend_pid(),
          pg_catalog.json_build_object(
            'jobs', pg_catalog.json_build_array(),
            'more', false,
            'wake_in', round(greatest(0, extract(epoch FROM notify_throttle_wake.at - pg_catalog.clock_timestamp())), 3)
          )::text));

COMMENT ON FUNCTION conveyor.notify_throttle_wake(timestamptz) IS
  'Internal. Notifies the calling session''s channel (conveyor_worker_<pid>) at commit with '
  '{"jobs": [], "more": false, "wake_in": <seconds from now until at>}: a throttle held a job '
  'back until then. Used by lock_jobs and lock_jobs_by_id.';

REVOKE ALL ON FUNCTION conveyor.try_lock_flow_job(bigint, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION conveyor.notify_throttle_wake(timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION conveyor.try_lock_flow_job(bigint, text) TO conveyor_worker;
GRANT EXECUTE ON FUNCTION conveyor.notify_throttle_wake(timestamptz) TO conveyor_worker;

-- --- flow control costs nothing when unused -------------------------------------------
-- Whether anything is paused or limited, as a constant in the catalog: the
-- body of conveyor.flow_in_use(), replaced (by the triggers below) when the
-- first pause or limit appears and when the last one goes. lock_jobs calls
-- it as an expression that the planner folds to the constant; replacing the
-- function invalidates every session's cached plan of that expression, so
-- the next transaction reads the new value. With nothing paused or limited,
-- lock_jobs then reads neither table: the walk is the one before flow
-- control (docs/background.md, "Flow control at no cost").
CREATE FUNCTION conveyor.flow_in_use()
RETURNS boolean
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
RETURN false;

COMMENT ON FUNCTION conveyor.flow_in_use() IS
  'Internal. Whether any row of conveyor.pauses or conveyor.concurrency_limits exists, as a '
  'constant: its body is replaced by tg_flow__in_use when that changes. lock_jobs and '
  'lock_jobs_by_id read the tables only when it is true.';

-- Every writer of the two tables ends its statement here. The lock makes
-- them decide one at a time, each holding it until its transaction ends,
-- so the last to decide sees what every other one committed: the constant
-- ends up true exactly when a row exists. The body is replaced every time,
-- not only when the bit changes: comparing with the function's value would
-- read it through this session's caches, which may not yet have seen the
-- previous writer's replacement; the replacement itself reads pg_proc
-- afresh. (Writers are operators' rare calls; a replacement costs each
-- worker one replanning of an expression.)
CREATE FUNCTION conveyor.tg_flow__in_use()
RETURNS trigger
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_in_use boolean;
BEGIN
  PERFORM pg_catalog.pg_advisory_xact_lock(conveyor.concurrency_key_lock('flow_in_use', ''));
  -- A new statement: it sees what the previous holder committed.
  v_in_use := EXISTS (SELECT FROM conveyor.pauses) OR EXISTS (SELECT FROM conveyor.concurrency_limits);
  EXECUTE format('CREATE OR REPLACE FUNCTION conveyor.flow_in_use() RETURNS boolean LANGUAGE sql '
                 'IMMUTABLE PARALLEL SAFE RETURN %s', v_in_use::text);
  RETURN NULL;
END
$$;

COMMENT ON FUNCTION conveyor.tg_flow__in_use() IS
  'Trigger function (statement-level, after any write to conveyor.pauses or '
  'conveyor.concurrency_limits): under a transaction-level advisory lock that all such writers '
  'share, replaces the body of flow_in_use() with whether a row exists. SECURITY DEFINER: '
  'conveyor_admin writes the tables, the schema owner owns the function.';

CREATE TRIGGER _900_flow_in_use AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON conveyor.pauses
  FOR EACH STATEMENT EXECUTE FUNCTION conveyor.tg_flow__in_use();
CREATE TRIGGER _900_flow_in_use AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON conveyor.concurrency_limits
  FOR EACH STATEMENT EXECUTE FUNCTION conveyor.tg_flow__in_use();

COMMENT ON TRIGGER _900_flow_in_use ON conveyor.pauses IS 'Keeps conveyor.flow_in_use() true exactly while a pause or limit exists.';
COMMENT ON TRIGGER _900_flow_in_use ON conveyor.concurrency_limits IS 'Keeps conveyor.flow_in_use() true exactly while a pause or limit exists.';

REVOKE ALL ON FUNCTION conveyor.flow_in_use() FROM PUBLIC;
REVOKE ALL ON FUNCTION conveyor.tg_flow__in_use() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION conveyor.flow_in_use() TO conveyor_worker, conveyor_admin;

-- The present state, for an upgrade of a database with pauses or limits.
DO $$
BEGIN
  IF EXISTS (SELECT FROM conveyor.pauses) OR EXISTS (SELECT FROM conveyor.concurrency_limits) THEN
    CREATE OR REPLACE FUNCTION conveyor.flow_in_use() RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE RETURN true;
  END IF;
END
$$;

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
  v_full_keys text[] := '{}';
  v_flow boolean;
  v_got boolean;
  v_try record;
  -- Throttled jobs locked in this round, with the start each took (given
  -- back if the recheck does not keep the job), and when the earliest
  -- throttle window that held a job back opens.
  v_start_ids bigint[] := '{}';
  v_start_keys text[] := '{}';
  v_start_ats timestamptz[] := '{}';
  v_wake timestamptz;
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

  -- With nothing paused or limited, flow_in_use() is the constant false
  -- and costs nothing: no table is read, and the walk below is the one
  -- before flow control plus one boolean test a row. Else one statement
  -- reads all of flow control.
  IF conveyor.flow_in_use() THEN
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
  ELSE
    v_paused_queues := '{}';
    v_flow := false;
  END IF;

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
            IF v_job.concurrency_key IS NULL OR NOT v_limited THEN
              v_got := pg_catalog.pg_try_advisory_lock(conveyor.job_lock_key1(v_job.id), conveyor.job_lock_key2(v_job.id));
            ELSE
              SELECT * INTO v_try FROM conveyor.try_lock_flow_job(v_job.id, v_job.concurrency_key);
              v_got := v_try.locked;
              IF v_try.key_full THEN
                -- At its limit, or its throttle's window is full: no more
                -- of this key in this call (only this call's own locks and
                -- starts could change that, and they only add).
                v_full_keys := v_full_keys || v_job.concurrency_key;
                v_wake := least(v_wake, v_try.wake_at);
              ELSIF v_try.started_at IS NOT NULL THEN
                v_start_ids := v_start_ids || v_job.id;
                v_start_keys := v_start_keys || v_job.concurrency_key;
                v_start_ats := v_start_ats || v_try.started_at;
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
    IF cardinality(v_start_ids) > 0 THEN
      -- A start belongs to a job handed out: give back the others'.
      PERFORM conveyor.give_back_throttle_slot(s.key, s.at)
         FROM unnest(v_start_ids, v_start_keys, v_start_ats) AS s(id, key, at)
        WHERE NOT s.id = ANY (v_new);
      v_start_ids := '{}';
      v_start_keys := '{}';
      v_start_ats := '{}';
    END IF;
    v_kept := v_kept || v_new;
    EXIT WHEN cardinality(v_kept) >= lock_jobs.max_jobs
           OR cardinality(v_new) = cardinality(v_locked);   -- nothing was dropped: the walk ran dry
    v_held := ARRAY(SELECT h FROM unnest(v_held || v_new) AS h ORDER BY 1);
  END LOOP;

  IF lock_jobs.held IS NOT NULL AND cardinality(v_kept) > 0 THEN
    PERFORM conveyor.locked_in_transaction(v_kept);
  END IF;

  IF v_wake IS NOT NULL THEN
    PERFORM conveyor.notify_throttle_wake(v_wake);
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
  'all sessions, nor more than its perform_throttle in any throttle_period (each job locked '
  'takes a start, under the key''s transaction-level advisory lock, until the transaction ends); '
  'such jobs are stepped over, not blocking the jobs behind them. When a throttle held a job '
  'back, notifies the calling session''s channel conveyor_worker_<pid> at commit with '
  '{"jobs": [], "more": false, "wake_in": <seconds until the earliest such window opens>}, so '
  'that a listening worker polls then. Errors: 22004 NULL queues or max_jobs; 22023 empty '
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
  v_got boolean;
  v_try record;
  v_start_ids bigint[] := '{}';
  v_start_keys text[] := '{}';
  v_start_ats timestamptz[] := '{}';
  v_wake timestamptz;
  v_full_keys text[] := '{}';
BEGIN
  PERFORM conveyor.require_read_committed('lock_jobs_by_id');

  -- As in lock_jobs: a failure gives back every lock this call took.
  BEGIN

  IF lock_jobs_by_id.held IS NULL THEN
    v_held := conveyor.held_job_ids();
  ELSE
    v_held := lock_jobs_by_id.held || conveyor.locked_in_transaction();
  END IF;

  -- As in lock_jobs: no table read unless something is paused or limited.
  v_flow := conveyor.flow_in_use();
  IF v_flow THEN
    -- Something is paused or limited: one job at a time, most urgent first,
    -- with the tests of lock_jobs' walk. (id > 0: as in lock_jobs, the
    -- primary key serves the read.)
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
      CONTINUE WHEN v_job.concurrency_key = ANY (v_full_keys);
      IF v_job.concurrency_key IS NULL THEN
        v_got := pg_catalog.pg_try_advisory_lock(conveyor.job_lock_key1(v_job.id), conveyor.job_lock_key2(v_job.id));
      ELSE
        SELECT * INTO v_try FROM conveyor.try_lock_flow_job(v_job.id, v_job.concurrency_key);
        v_got := v_try.locked;
        IF v_try.key_full THEN
          v_full_keys := v_full_keys || v_job.concurrency_key;
          v_wake := least(v_wake, v_try.wake_at);
        ELSIF v_try.started_at IS NOT NULL THEN
          v_start_ids := v_start_ids || v_job.id;
          v_start_keys := v_start_keys || v_job.concurrency_key;
          v_start_ats := v_start_ats || v_try.started_at;
        END IF;
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
  IF cardinality(v_start_ids) > 0 THEN
    PERFORM conveyor.give_back_throttle_slot(s.key, s.at)
       FROM unnest(v_start_ids, v_start_keys, v_start_ats) AS s(id, key, at)
      WHERE NOT s.id = ANY (v_kept);
  END IF;
  IF lock_jobs_by_id.held IS NOT NULL AND cardinality(v_kept) > 0 THEN
    PERFORM conveyor.locked_in_transaction(v_kept);
  END IF;
  IF v_wake IS NOT NULL THEN
    PERFORM conveyor.notify_throttle_wake(v_wake);
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
  'that fails releases the locks it took, as lock_jobs does. Obeys pauses, perform limits and '
  'throttles as lock_jobs does, with the same wake_in notification.';

COMMIT;
