-- Revert conveyor:flow_control from pg

BEGIN;

-- Back to the definitions of the changes flow_columns (enqueue,
-- enqueue_many) and lock_jobs (lock_jobs, lock_jobs_by_id), exactly.
CREATE OR REPLACE FUNCTION conveyor.enqueue(
  job_class text,
  args jsonb DEFAULT '[]',
  queue text DEFAULT 'default',
  priority integer DEFAULT 100,
  run_at timestamptz DEFAULT now(),
  data jsonb DEFAULT '{}',
  maximum_retry_count integer DEFAULT 15,
  unique_key text DEFAULT NULL,
  concurrency_key text DEFAULT NULL,
  labels text[] DEFAULT NULL,
  batch_id bigint DEFAULT NULL
)
RETURNS conveyor.jobs
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
-- ON CONFLICT (unique_key) names the column; the parameters are always
-- written enqueue.name.
#variable_conflict use_column
DECLARE
  v_problem record;
  v_job conveyor.jobs;
BEGIN
  -- Fast path: all of job_problem's rules in one expression, false or NULL (a
  -- NULL field) when any is broken. A valid job costs no second PL/pgSQL
  -- call; job_problem runs only to name the first broken rule.
  IF (enqueue.job_class <> '' AND char_length(enqueue.job_class) <= conveyor.job_limit('job_class')
      AND jsonb_typeof(enqueue.args) = 'array'
      AND enqueue.queue <> '' AND char_length(enqueue.queue) <= conveyor.job_limit('queue')
      AND enqueue.priority BETWEEN 0 AND conveyor.job_limit('priority')
      AND enqueue.run_at IS NOT NULL
      AND jsonb_typeof(enqueue.data) = 'object'
      AND enqueue.maximum_retry_count >= 0) IS NOT TRUE THEN
    v_problem := conveyor.job_problem(enqueue.job_class, enqueue.args, enqueue.queue, enqueue.priority,
                                      enqueue.run_at, enqueue.data, enqueue.maximum_retry_count);
    -- Should the two ever disagree, the table's constraints still decide below.
    IF v_problem.error_code IS NOT NULL THEN
      RAISE EXCEPTION 'conveyor.enqueue: %', v_problem.error_message USING ERRCODE = v_problem.error_code;
    END IF;
  END IF;

  IF enqueue.unique_key IS NULL AND enqueue.concurrency_key IS NULL AND enqueue.labels IS NULL
     AND enqueue.batch_id IS NULL THEN
    -- The hot path: the released insert, unchanged.
    INSERT INTO conveyor.jobs (job_class, args, queue, priority, run_at, data, maximum_retry_count)
    VALUES (enqueue.job_class, enqueue.args, enqueue.queue, enqueue.priority, enqueue.run_at,
            enqueue.data, enqueue.maximum_retry_count)
    RETURNING * INTO v_job;
    RETURN v_job;
  ELSIF enqueue.unique_key = '' THEN
    RAISE EXCEPTION 'conveyor.enqueue: unique_key must not be empty' USING ERRCODE = '22023';
  ELSIF char_length(enqueue.unique_key) > 500 THEN  -- the one check of it, with enqueue_many's
    RAISE EXCEPTION 'conveyor.enqueue: unique_key must be at most 500 characters, not %',
      char_length(enqueue.unique_key) USING ERRCODE = '22001';
  END IF;
  IF enqueue.concurrency_key IS NOT NULL OR enqueue.labels IS NOT NULL THEN
    v_problem := conveyor.flow_fields_problem(enqueue.concurrency_key, enqueue.labels);
    IF v_problem.error_code IS NOT NULL THEN
      RAISE EXCEPTION 'conveyor.enqueue: %', v_problem.error_message USING ERRCODE = v_problem.error_code;
    END IF;
  END IF;

  IF enqueue.unique_key IS NULL THEN
    INSERT INTO conveyor.jobs (job_class, args, queue, priority, run_at, data, maximum_retry_count,
                               concurrency_key, labels, batch_id)
    VALUES (enqueue.job_class, enqueue.args, enqueue.queue, enqueue.priority, enqueue.run_at,
            enqueue.data, enqueue.maximum_retry_count,
            enqueue.concurrency_key, coalesce(enqueue.labels, '{}'), enqueue.batch_id)
    RETURNING * INTO v_job;
    RETURN v_job;
  END IF;

  LOOP
    -- The index decides, not a prior SELECT: when another transaction holds
    -- an uncommitted job with this key, the INSERT waits for it to end, then
    -- inserts (it rolled back) or does nothing (it committed).
    INSERT INTO conveyor.jobs (job_class, args, queue, priority, run_at, data, maximum_retry_count, unique_key,
                               concurrency_key, labels, batch_id)
    VALUES (enqueue.job_class, enqueue.args, enqueue.queue, enqueue.priority, enqueue.run_at,
            enqueue.data, enqueue.maximum_retry_count, enqueue.unique_key,
            enqueue.concurrency_key, coalesce(enqueue.labels, '{}'), enqueue.batch_id)
    ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL AND finished_at IS NULL AND expired_at IS NULL
    DO NOTHING
    RETURNING * INTO v_job;
    IF FOUND THEN
      RETURN v_job;
    END IF;
    -- A new statement, so (in READ COMMITTED) a fresh snapshot that sees the
    -- holder that just committed.
    SELECT * INTO v_job FROM conveyor.jobs AS j
     WHERE j.unique_key = enqueue.unique_key AND j.finished_at IS NULL AND j.expired_at IS NULL;
    IF FOUND THEN
      RETURN v_job;
    END IF;
    -- The holder was resolved between the two statements: the key is free, try again.
  END LOOP;
END
$$;

COMMENT ON FUNCTION conveyor.enqueue(text, jsonb, text, integer, timestamptz, jsonb, integer, text, text, text[], bigint) IS
  'Inserts one job and returns its row. Parameters (named notation reads best): job_class '
  '(required, 1-500 characters), args (JSON array, default []), queue (1-100 characters, '
  'default ''default''), priority (0-32767, lower runs first, default 100), run_at (default '
  'now()), data (JSON object, default {}), maximum_retry_count (default 15), unique_key '
  '(default NULL: none; 1-500 characters), concurrency_key (default NULL: none; 1-500 '
  'characters; the key of conveyor.concurrency_limits that applies), labels (default none; '
  'each 1-100 characters), batch_id (default NULL: none). With a unique_key held by an '
  'unresolved job (ready, '
  'scheduled, running or awaiting a retry), inserts nothing and returns that job''s row; '
  'finishing, expiring or destroying the job frees the key. Race-free by the unique index '
  'jobs_unique_key_idx: an enqueue with the key of another transaction''s uncommitted job '
  'waits for that transaction to end; under REPEATABLE READ or SERIALIZABLE it may then fail '
  'with 40001 (retry the transaction). Runs in the caller''s transaction: a rolled-back '
  'enqueue leaves no job. A job ready now is announced to a listening worker at commit. '
  'Errors: 22004 a NULL field or a NULL label; 22023 an empty name, unique_key, '
  'concurrency_key or label, args not an array, data not '
  'an object, a negative maximum_retry_count, labels of more than one dimension; 22003 '
  'priority out of range; 22001 a name, unique_key, concurrency_key or label too long. '
  'SECURITY DEFINER so conveyor_enqueuer needs no table privileges. '
  'Locks nothing (but waits, as said, on a key another transaction is inserting).';

CREATE OR REPLACE FUNCTION conveyor.enqueue_many(jobs jsonb)
RETURNS SETOF bigint
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_job jsonb;
  v_index bigint;
  v_problem record;
  v_plain_ids bigint[];  -- ids of the inserted jobs without a key, in input order
  v_keyed jsonb;         -- {unique_key: id} of the inserted jobs with a key
BEGIN
  IF jobs IS NULL THEN
    RAISE EXCEPTION 'conveyor.enqueue_many: jobs must not be NULL' USING ERRCODE = '22004';
  ELSIF jsonb_typeof(jobs) <> 'array' THEN
    RAISE EXCEPTION 'conveyor.enqueue_many: jobs must be a JSON array of job objects, not %', jsonb_typeof(jobs)
      USING ERRCODE = '22023';
  END IF;

  BEGIN
    -- One pass: a key that is absent takes enqueue's default (the column
    -- defaults, repeated here; tests/pgtap/jobs_table.sql proves they agree); a key of the
    -- wrong JSON type or with an unknown name yields NULL or an error here,
    -- so the insert fails and the handler below names the element.
    IF NOT jsonb_path_exists(jobs, 'lax $[*] ? (exists(@.unique_key) || exists(@.concurrency_key) || exists(@.labels) || exists(@.batch_id))') THEN
      -- The hot path, none of the optional keys: the released statement.
      RETURN QUERY
      INSERT INTO conveyor.jobs (job_class, args, queue, priority, run_at, data, maximum_retry_count)
    SELECT CASE WHEN jsonb_typeof(e.job -> 'job_class') = 'string' THEN e.job ->> 'job_class' END,
           coalesce(e.job -> 'args', '[]'),
           CASE WHEN NOT e.job ? 'queue' THEN 'default'
                WHEN jsonb_typeof(e.job -> 'queue') = 'string' THEN e.job ->> 'queue' END,
           CASE WHEN NOT e.job ? 'priority' THEN 100
                WHEN jsonb_typeof(e.job -> 'priority') = 'number' THEN (e.job ->> 'priority')::integer END,
           CASE WHEN NOT e.job ? 'run_at' THEN now()
                WHEN jsonb_typeof(e.job -> 'run_at') = 'string' THEN (e.job ->> 'run_at')::timestamptz END,
           coalesce(e.job -> 'data', '{}'),
           CASE WHEN NOT e.job ? 'maximum_retry_count' THEN 15
                WHEN jsonb_typeof(e.job -> 'maximum_retry_count') = 'number' THEN (e.job ->> 'maximum_retry_count')::integer END
      FROM jsonb_array_elements(jobs) WITH ORDINALITY AS e(job, i)
     WHERE CASE WHEN jsonb_typeof(e.job) = 'object'
                 AND NOT e.job ?| ARRAY(SELECT k FROM jsonb_object_keys(e.job) AS k
                                        WHERE k NOT IN ('job_class', 'args', 'queue', 'priority',
                                                        'run_at', 'data', 'maximum_retry_count',
                                                        'unique_key', 'concurrency_key', 'labels',
                                                        'batch_id'))
                THEN true
                -- not an object, or an unknown key: fail (by row, so the planner cannot
                -- fold it into an error at plan time), then explain below
                ELSE e.i / 0 = 0
           END
     ORDER BY e.i
      RETURNING id;
      RETURN;
    END IF;

    -- With unique keys (or the flow fields). ON CONFLICT DO NOTHING skips an element whose key an
    -- unresolved job holds, including a job inserted by an earlier element of
    -- this very statement. A key held by another transaction's uncommitted job
    -- makes the insert wait for that transaction. Rows go in (key, input)
    -- order, jobs without a key first: the first occurrence of a key wins, and
    -- two calls that share keys take them in the same order, so they wait for
    -- each other instead of deadlocking.
    WITH inserted AS (
      INSERT INTO conveyor.jobs (job_class, args, queue, priority, run_at, data, maximum_retry_count, unique_key,
                                 concurrency_key, labels, batch_id)
    SELECT CASE WHEN jsonb_typeof(e.job -> 'job_class') = 'string' THEN e.job ->> 'job_class' END,
           coalesce(e.job -> 'args', '[]'),
           CASE WHEN NOT e.job ? 'queue' THEN 'default'
                WHEN jsonb_typeof(e.job -> 'queue') = 'string' THEN e.job ->> 'queue' END,
           CASE WHEN NOT e.job ? 'priority' THEN 100
                WHEN jsonb_typeof(e.job -> 'priority') = 'number' THEN (e.job ->> 'priority')::integer END,
           CASE WHEN NOT e.job ? 'run_at' THEN now()
                WHEN jsonb_typeof(e.job -> 'run_at') = 'string' THEN (e.job ->> 'run_at')::timestamptz END,
           coalesce(e.job -> 'data', '{}'),
           CASE WHEN NOT e.job ? 'maximum_retry_count' THEN 15
                WHEN jsonb_typeof(e.job -> 'maximum_retry_count') = 'number' THEN (e.job ->> 'maximum_retry_count')::integer END,
           -- absent is no key; a key that is not a string of 1 to 500 characters
           -- (no table constraint checks it) fails (by row), explained below
           CASE WHEN NOT e.job ? 'unique_key' THEN NULL
                WHEN jsonb_typeof(e.job -> 'unique_key') = 'string'
                 AND char_length(e.job ->> 'unique_key') BETWEEN 1 AND 500 THEN e.job ->> 'unique_key'
                ELSE (e.i / 0)::text END,
           -- the flow fields, each checked the same way: a bad one fails by row
           CASE WHEN NOT e.job ? 'concurrency_key' THEN NULL
                WHEN jsonb_typeof(e.job -> 'concurrency_key') = 'string'
                 AND char_length(e.job ->> 'concurrency_key') BETWEEN 1 AND 500 THEN e.job ->> 'concurrency_key'
                ELSE (e.i / 0)::text END,
           CASE WHEN NOT e.job ? 'labels' THEN '{}'
                ELSE conveyor.labels_from_json(e.job -> 'labels') END,
           CASE WHEN NOT e.job ? 'batch_id' THEN NULL
                WHEN jsonb_typeof(e.job -> 'batch_id') = 'number' THEN (e.job ->> 'batch_id')::bigint
                ELSE (e.i / 0)::bigint END
      FROM jsonb_array_elements(jobs) WITH ORDINALITY AS e(job, i)
     WHERE CASE WHEN jsonb_typeof(e.job) = 'object'
                 AND NOT e.job ?| ARRAY(SELECT k FROM jsonb_object_keys(e.job) AS k
                                        WHERE k NOT IN ('job_class', 'args', 'queue', 'priority',
                                                        'run_at', 'data', 'maximum_retry_count',
                                                        'unique_key', 'concurrency_key', 'labels',
                                                        'batch_id'))
                THEN true
                -- not an object, or an unknown key: fail (by row, so the planner cannot
                -- fold it into an error at plan time), then explain below
                ELSE e.i / 0 = 0
           END
     ORDER BY e.job ->> 'unique_key' NULLS FIRST, e.i
      ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL AND finished_at IS NULL AND expired_at IS NULL
      DO NOTHING
      RETURNING id, unique_key
    )
    SELECT array_agg(ins.id ORDER BY ins.id) FILTER (WHERE ins.unique_key IS NULL),
           coalesce(jsonb_object_agg(ins.unique_key, ins.id) FILTER (WHERE ins.unique_key IS NOT NULL), '{}')
      INTO v_plain_ids, v_keyed
      FROM inserted AS ins;

    -- Every element's id in input order: a job without a key is the n-th
    -- inserted one (identity ids grow in insert order); a key maps to the job
    -- inserted for it, else to the unresolved job holding it, read by this new
    -- statement (so a holder that committed while we waited is seen), else,
    -- when that holder was resolved in between, to a fresh enqueue of the element.
    RETURN QUERY
    SELECT CASE WHEN e.key IS NULL THEN v_plain_ids[e.n]
                ELSE coalesce((v_keyed ->> e.key)::bigint,
                              (SELECT j.id FROM conveyor.jobs AS j
                                WHERE j.unique_key = e.key AND j.finished_at IS NULL AND j.expired_at IS NULL),
                              (SELECT r.id FROM conveyor.enqueue_many(jsonb_build_array(e.job)) AS r(id)))
           END
      FROM (SELECT x.job, x.job ->> 'unique_key' AS key, x.i,
                   row_number() OVER (PARTITION BY x.job ->> 'unique_key' IS NULL ORDER BY x.i) AS n
              FROM jsonb_array_elements(jobs) WITH ORDINALITY AS x(job, i)) AS e
     ORDER BY e.i;
  EXCEPTION WHEN data_exception OR integrity_constraint_violation THEN
    -- Find the first element at fault and say what is wrong with it.
    FOR v_job, v_index IN SELECT e.job, e.i - 1 FROM jsonb_array_elements(jobs) WITH ORDINALITY AS e(job, i) ORDER BY e.i LOOP
      v_problem := conveyor.job_json_problem(v_job);
      IF v_problem.error_code IS NOT NULL THEN
        RAISE EXCEPTION 'conveyor.enqueue_many: jobs[%]: %', v_index, v_problem.error_message
          USING ERRCODE = v_problem.error_code;
      END IF;
    END LOOP;
    RAISE;
  END;
END
$$;

COMMENT ON FUNCTION conveyor.enqueue_many(jsonb) IS
  'Inserts many jobs in one statement and returns their ids in input order. jobs is a JSON '
  'array of objects with enqueue''s parameter names as keys (job_class required; the others '
  'take enqueue''s defaults when absent; run_at is an ISO 8601 string; unique_key and '
  'concurrency_key strings, labels an array of strings, batch_id a number). '
  'An element whose unique_key an unresolved job holds inserts nothing and returns that job''s '
  'id; within one call the first element with a key wins and later ones with the same key '
  'return its id. Jobs with keys are inserted in key order (their ids follow it), so two '
  'calls sharing keys cannot deadlock each other. Keys are race-free as in enqueue: a key another transaction is inserting '
  'makes the call wait for it. All or nothing: a bad '
  'element inserts no job and raises enqueue''s SQLSTATE for the fault, naming the element '
  '(jobs[0] is the first); 22023 also for an element that is not an object or has an unknown '
  'key, and 22004 for a JSON null value; 22P02/22003/22007/22008 for a value that does not '
  'cast. Sends at most one NOTIFY per listening worker, whatever the number of jobs. '
  'SECURITY DEFINER so conveyor_enqueuer needs no table privileges. Locks nothing.';

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
  'session holds what it held before. Errors: 22004 NULL queues or max_jobs; 22023 empty '
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
BEGIN
  PERFORM conveyor.require_read_committed('lock_jobs_by_id');

  -- As in lock_jobs: a failure gives back every lock this call took.
  BEGIN

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
  'that fails releases the locks it took, as lock_jobs does.';

DROP FUNCTION conveyor.enqueue_allowed(text);
DROP FUNCTION conveyor.job_paused(conveyor.pauses[], text, text, text[]);
DROP FUNCTION conveyor.try_lock_limited_job(bigint, text, integer);
DROP FUNCTION conveyor.concurrency_key_lock(text, text);
DROP FUNCTION conveyor.concurrency_limit_for(text);
DROP FUNCTION conveyor.delete_concurrency_limit(text);
DROP FUNCTION conveyor.set_concurrency_limit(text, integer, integer);
DROP FUNCTION conveyor.resume(text, text, text);
DROP FUNCTION conveyor.pause(text, text, text);
DROP FUNCTION conveyor.check_pause_names(text, text, text, text);
DROP TABLE conveyor.concurrency_limits;
DROP TABLE conveyor.pauses;

COMMIT;
