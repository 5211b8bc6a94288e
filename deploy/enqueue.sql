-- Deploy conveyor:enqueue to pg
-- requires: enqueue@v0.1.0
-- requires: jobs_unique_key

BEGIN;

-- A new parameter changes the signature, so the released function goes and
-- the new one takes its place with the same comment style, SECURITY DEFINER,
-- pinned search_path and grants. Callers in named notation
-- (enqueue_schedules_due_at) keep working: unique_key has a default.
DROP FUNCTION conveyor.enqueue(text, jsonb, text, integer, timestamptz, jsonb, integer);

-- The defaults repeat conveyor.jobs' column defaults, so that the signature
-- documents them (tests/pgtap/jobs_table.sql proves they agree).
CREATE FUNCTION conveyor.enqueue(
  job_class text,
  args jsonb DEFAULT '[]',
  queue text DEFAULT 'default',
  priority integer DEFAULT 100,
  run_at timestamptz DEFAULT now(),
  data jsonb DEFAULT '{}',
  maximum_retry_count integer DEFAULT 15,
  unique_key text DEFAULT NULL
)
RETURNS conveyor.jobs
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
-- ON CONFLICT (unique_key) names the column; the parameter is always
-- written enqueue.unique_key.
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

  IF enqueue.unique_key IS NULL THEN
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

  LOOP
    -- The index decides, not a prior SELECT: when another transaction holds
    -- an uncommitted job with this key, the INSERT waits for it to end, then
    -- inserts (it rolled back) or does nothing (it committed).
    INSERT INTO conveyor.jobs (job_class, args, queue, priority, run_at, data, maximum_retry_count, unique_key)
    VALUES (enqueue.job_class, enqueue.args, enqueue.queue, enqueue.priority, enqueue.run_at,
            enqueue.data, enqueue.maximum_retry_count, enqueue.unique_key)
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

COMMENT ON FUNCTION conveyor.enqueue(text, jsonb, text, integer, timestamptz, jsonb, integer, text) IS
  'Inserts one job and returns its row. Parameters (named notation reads best): job_class '
  '(required, 1-500 characters), args (JSON array, default []), queue (1-100 characters, '
  'default ''default''), priority (0-32767, lower runs first, default 100), run_at (default '
  'now()), data (JSON object, default {}), maximum_retry_count (default 15), unique_key '
  '(default NULL: none; 1-500 characters). With a unique_key held by an unresolved job (ready, '
  'scheduled, running or awaiting a retry), inserts nothing and returns that job''s row; '
  'finishing, expiring or destroying the job frees the key. Race-free by the unique index '
  'jobs_unique_key_idx: an enqueue with the key of another transaction''s uncommitted job '
  'waits for that transaction to end; under REPEATABLE READ or SERIALIZABLE it may then fail '
  'with 40001 (retry the transaction). Runs in the caller''s transaction: a rolled-back '
  'enqueue leaves no job. A job ready now is announced to a listening worker at commit. '
  'Errors: 22004 a NULL field; 22023 an empty name or unique_key, args not an array, data not '
  'an object, a negative maximum_retry_count; 22003 priority out of range; 22001 a name or '
  'unique_key too long. SECURITY DEFINER so conveyor_enqueuer needs no table privileges. '
  'Locks nothing (but waits, as said, on a key another transaction is inserting).';

REVOKE ALL ON FUNCTION conveyor.enqueue(text, jsonb, text, integer, timestamptz, jsonb, integer, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION conveyor.enqueue(text, jsonb, text, integer, timestamptz, jsonb, integer, text) TO conveyor_enqueuer;

COMMIT;
