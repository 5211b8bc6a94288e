-- Deploy conveyor:enqueue to pg
-- requires: jobs

BEGIN;

CREATE FUNCTION conveyor.job_problem(
  job_class text, args jsonb, queue text, priority integer, run_at timestamptz,
  data jsonb, maximum_retry_count integer,
  OUT error_code text, OUT error_message text
)
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  -- One rule each, in column order; the first broken rule is reported.
  IF job_problem.job_class IS NULL THEN
    error_code := '22004'; error_message := 'job_class must not be NULL';
  ELSIF job_problem.job_class = '' THEN
    error_code := '22023'; error_message := 'job_class must not be empty';
  ELSIF char_length(job_problem.job_class) > conveyor.job_limit('job_class') THEN
    error_code := '22001'; error_message := format('job_class must be at most %s characters, not %s', conveyor.job_limit('job_class'), char_length(job_problem.job_class));
  ELSIF job_problem.args IS NULL THEN
    error_code := '22004'; error_message := 'args must not be NULL';
  ELSIF jsonb_typeof(job_problem.args) <> 'array' THEN
    error_code := '22023'; error_message := format('args must be a JSON array, not %s', jsonb_typeof(job_problem.args));
  ELSIF job_problem.queue IS NULL THEN
    error_code := '22004'; error_message := 'queue must not be NULL';
  ELSIF job_problem.queue = '' THEN
    error_code := '22023'; error_message := 'queue must not be empty';
  ELSIF char_length(job_problem.queue) > conveyor.job_limit('queue') THEN
    error_code := '22001'; error_message := format('queue must be at most %s characters, not %s', conveyor.job_limit('queue'), char_length(job_problem.queue));
  ELSIF job_problem.priority IS NULL THEN
    error_code := '22004'; error_message := 'priority must not be NULL';
  ELSIF job_problem.priority NOT BETWEEN 0 AND conveyor.job_limit('priority') THEN
    error_code := '22003'; error_message := format('priority must be between 0 and %s, not %s', conveyor.job_limit('priority'), job_problem.priority);
  ELSIF job_problem.run_at IS NULL THEN
    error_code := '22004'; error_message := 'run_at must not be NULL';
  ELSIF job_problem.data IS NULL THEN
    error_code := '22004'; error_message := 'data must not be NULL';
  ELSIF jsonb_typeof(job_problem.data) <> 'object' THEN
    error_code := '22023'; error_message := format('data must be a JSON object, not %s', jsonb_typeof(job_problem.data));
  ELSIF job_problem.maximum_retry_count IS NULL THEN
    error_code := '22004'; error_message := 'maximum_retry_count must not be NULL';
  ELSIF job_problem.maximum_retry_count < 0 THEN
    error_code := '22023'; error_message := format('maximum_retry_count must not be negative, not %s', job_problem.maximum_retry_count);
  END IF;
END
$$;

COMMENT ON FUNCTION conveyor.job_problem(text, jsonb, text, integer, timestamptz, jsonb, integer) IS
  'Internal. Checks one job''s fields against the rules enqueue documents and returns the '
  'SQLSTATE and message of the first rule broken, or two NULLs. Shared by enqueue and '
  'enqueue_many so both report the same error for the same mistake; both call it only '
  'to explain a job their own checks rejected, so a valid job never pays for it.';

-- The defaults repeat conveyor.jobs' column defaults, so that the signature
-- documents them (tests/pgtap/jobs_table.sql proves they agree).
CREATE FUNCTION conveyor.enqueue(
  job_class text,
  args jsonb DEFAULT '[]',
  queue text DEFAULT 'default',
  priority integer DEFAULT 100,
  run_at timestamptz DEFAULT now(),
  data jsonb DEFAULT '{}',
  maximum_retry_count integer DEFAULT 15
)
RETURNS conveyor.jobs
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
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

  INSERT INTO conveyor.jobs (job_class, args, queue, priority, run_at, data, maximum_retry_count)
  VALUES (enqueue.job_class, enqueue.args, enqueue.queue, enqueue.priority, enqueue.run_at,
          enqueue.data, enqueue.maximum_retry_count)
  RETURNING * INTO v_job;
  RETURN v_job;
END
$$;

COMMENT ON FUNCTION conveyor.enqueue(text, jsonb, text, integer, timestamptz, jsonb, integer) IS
  'Inserts one job and returns its row. Parameters (named notation reads best): job_class '
  '(required, 1-500 characters), args (JSON array, default []), queue (1-100 characters, '
  'default ''default''), priority (0-32767, lower runs first, default 100), run_at (default '
  'now()), data (JSON object, default {}), maximum_retry_count (default 15). Runs in the '
  'caller''s transaction: a rolled-back enqueue leaves no job. A job ready now is announced '
  'to a listening worker at commit. Errors: 22004 a NULL field; 22023 an empty name, args not '
  'an array, data not an object, a negative maximum_retry_count; 22003 priority out of range; '
  '22001 a name too long. SECURITY DEFINER so conveyor_enqueuer needs no table privileges. '
  'Locks nothing.';

REVOKE ALL ON FUNCTION conveyor.job_problem(text, jsonb, text, integer, timestamptz, jsonb, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION conveyor.enqueue(text, jsonb, text, integer, timestamptz, jsonb, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION conveyor.enqueue(text, jsonb, text, integer, timestamptz, jsonb, integer) TO conveyor_enqueuer;

COMMIT;
