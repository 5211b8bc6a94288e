-- Revert conveyor:enqueue from pg

BEGIN;

-- Back to the released (v0.1.0) enqueue, without unique_key.
DROP FUNCTION conveyor.enqueue(text, jsonb, text, integer, timestamptz, jsonb, integer, text);

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

REVOKE ALL ON FUNCTION conveyor.enqueue(text, jsonb, text, integer, timestamptz, jsonb, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION conveyor.enqueue(text, jsonb, text, integer, timestamptz, jsonb, integer) TO conveyor_enqueuer;

COMMIT;
