-- Deploy conveyor:flow_columns to pg
-- requires: enqueue
-- requires: enqueue_many

BEGIN;

-- The per-job fields of flow control (concurrency limits, throttles,
-- pausing by label, batches): three columns, and enqueue/enqueue_many
-- parameters for them. The policies that read them come in later changes
-- (concurrency_limits, pauses; batches adds its own table and checks on
-- batch_id). Adding a nullable column, or one with a constant default,
-- rewrites nothing.
ALTER TABLE conveyor.jobs
  ADD COLUMN concurrency_key text,
  ADD COLUMN labels text[] NOT NULL DEFAULT '{}',
  ADD COLUMN batch_id bigint;

-- lock_jobs counts the running jobs of a limited key, and enqueue the waiting
-- ones, through this index: only unresolved jobs with a key are in it, so
-- jobs without one cost an insert nothing but the predicate test.
CREATE INDEX jobs_concurrency_key_idx ON conveyor.jobs (concurrency_key)
  WHERE concurrency_key IS NOT NULL AND finished_at IS NULL AND expired_at IS NULL;

COMMENT ON COLUMN conveyor.jobs.concurrency_key IS
  'NULL, or the key (1 to 500 characters, checked by enqueue and enqueue_many) whose '
  'concurrency limits and throttle (conveyor.concurrency_limits) apply to the job.';
COMMENT ON COLUMN conveyor.jobs.labels IS
  'Labels (each 1 to 100 characters, checked by enqueue and enqueue_many; default none): '
  'stats can be filtered by them and a label can be paused.';
COMMENT ON COLUMN conveyor.jobs.batch_id IS
  'NULL, or the batch the job belongs to.';
COMMENT ON INDEX conveyor.jobs_concurrency_key_idx IS
  'The unresolved jobs that carry a concurrency_key, by key: how limits count a key''s jobs.';

-- The rules for the new fields, in one place for enqueue and enqueue_many.
-- Called only when a field is given, so a job without them pays nothing.
CREATE FUNCTION conveyor.flow_fields_problem(
  concurrency_key text, labels text[],
  OUT error_code text, OUT error_message text
)
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF flow_fields_problem.concurrency_key = '' THEN
    error_code := '22023'; error_message := 'concurrency_key must not be empty';
  ELSIF char_length(flow_fields_problem.concurrency_key) > 500 THEN
    error_code := '22001'; error_message := format('concurrency_key must be at most 500 characters, not %s', char_length(flow_fields_problem.concurrency_key));
  ELSIF array_ndims(flow_fields_problem.labels) > 1 THEN
    error_code := '22023'; error_message := 'labels must be a one-dimensional array';
  ELSIF array_position(flow_fields_problem.labels, NULL) IS NOT NULL THEN
    error_code := '22004'; error_message := 'labels must not contain NULL';
  ELSIF '' = ANY (flow_fields_problem.labels) THEN
    error_code := '22023'; error_message := 'a label must not be empty';
  ELSIF EXISTS (SELECT FROM unnest(flow_fields_problem.labels) AS l WHERE char_length(l) > 100) THEN
    error_code := '22001'; error_message := format('a label must be at most 100 characters, not %s',
      (SELECT max(char_length(l)) FROM unnest(flow_fields_problem.labels) AS l));
  END IF;
END
$$;

COMMENT ON FUNCTION conveyor.flow_fields_problem(text, text[]) IS
  'Internal. Checks a job''s concurrency_key (1 to 500 characters) and labels (a '
  'one-dimensional array of 1 to 100 character strings, no NULL) and returns the SQLSTATE and '
  'message of the first rule broken, or two NULLs. Shared by enqueue and enqueue_many.';

-- A new signature, so the previous enqueue goes and the new one takes its
-- place with the same comment style, SECURITY DEFINER, pinned search_path and
-- grants. Callers in named notation keep working: the new parameters have
-- defaults.
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

REVOKE ALL ON FUNCTION conveyor.flow_fields_problem(text, text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION conveyor.enqueue(text, jsonb, text, integer, timestamptz, jsonb, integer, text, text, text[], bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION conveyor.enqueue(text, jsonb, text, integer, timestamptz, jsonb, integer, text, text, text[], bigint) TO conveyor_enqueuer;

-- enqueue_many's statement turns a JSON labels value into the column's type
-- per row; a bad one fails the statement, and job_json_problem then names it.
CREATE FUNCTION conveyor.labels_from_json(labels jsonb)
RETURNS text[]
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_labels text[];
BEGIN
  IF jsonb_typeof(labels_from_json.labels) = 'array'
     AND NOT EXISTS (SELECT FROM jsonb_array_elements(labels_from_json.labels) AS l WHERE jsonb_typeof(l) <> 'string') THEN
    v_labels := ARRAY(SELECT jsonb_array_elements_text(labels_from_json.labels));
    IF (conveyor.flow_fields_problem(NULL, v_labels)).error_code IS NULL THEN
      RETURN v_labels;
    END IF;
  END IF;
  RAISE EXCEPTION 'conveyor.labels_from_json: not a JSON array of labels' USING ERRCODE = '22023';
END
$$;

COMMENT ON FUNCTION conveyor.labels_from_json(jsonb) IS
  'Internal. A JSON array of labels as text[]; raises 22023 for anything else (not an array, '
  'a non-string element, a label breaking flow_fields_problem''s rules). Used by enqueue_many.';

REVOKE ALL ON FUNCTION conveyor.labels_from_json(jsonb) FROM PUBLIC;

CREATE OR REPLACE FUNCTION conveyor.job_json_problem(job jsonb, OUT error_code text, OUT error_message text)
LANGUAGE plpgsql
STABLE  -- text to timestamptz depends on the TimeZone setting
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_key text;
  v_type text;
  -- Placeholders for absent keys, valid for job_problem: an absent key is
  -- never at fault (it takes its default), so any valid value will do.
  v_priority integer := 0;
  v_run_at timestamptz := '-infinity';
  v_maximum_retry_count integer := 0;
BEGIN
  IF jsonb_typeof(job) IS DISTINCT FROM 'object' THEN
    error_code := '22023'; error_message := format('must be a JSON object, not %s', coalesce(jsonb_typeof(job), 'NULL'));
    RETURN;
  END IF;

  FOR v_key, v_type IN SELECT k, jsonb_typeof(job -> k) FROM jsonb_object_keys(job) AS k LOOP
    IF v_key NOT IN ('job_class', 'args', 'queue', 'priority', 'run_at', 'data', 'maximum_retry_count', 'unique_key',
                     'concurrency_key', 'labels', 'batch_id') THEN
      error_code := '22023'; error_message := format('unknown key %L (known: job_class, args, queue, priority, run_at, data, maximum_retry_count, unique_key, concurrency_key, labels, batch_id)', v_key);
      RETURN;
    ELSIF v_type = 'null' THEN
      error_code := '22004'; error_message := format('%s must not be null', v_key);
      RETURN;
    ELSIF v_key IN ('job_class', 'queue', 'run_at', 'unique_key', 'concurrency_key') AND v_type <> 'string' THEN
      error_code := '22023'; error_message := format('%s must be a JSON string, not %s', v_key, v_type);
      RETURN;
    ELSIF v_key IN ('priority', 'maximum_retry_count', 'batch_id') AND v_type <> 'number' THEN
      error_code := '22023'; error_message := format('%s must be a JSON number, not %s', v_key, v_type);
      RETURN;
    ELSIF v_key = 'labels' AND v_type <> 'array' THEN
      error_code := '22023'; error_message := format('labels must be a JSON array, not %s', v_type);
      RETURN;
    ELSIF v_key = 'labels' AND EXISTS (SELECT FROM jsonb_array_elements(job -> 'labels') AS l
                                        WHERE jsonb_typeof(l) <> 'string') THEN
      error_code := '22023'; error_message := 'labels must be a JSON array of strings';
      RETURN;
    END IF;
  END LOOP;

  BEGIN
    IF job ? 'priority' THEN
      v_key := 'priority';
      IF (job ->> 'priority')::numeric NOT BETWEEN 0 AND conveyor.job_limit('priority') THEN
        error_code := '22003'; error_message := format('priority must be between 0 and %s, not %s', conveyor.job_limit('priority'), job ->> 'priority');
        RETURN;
      END IF;
      v_priority := (job ->> 'priority')::integer;
    END IF;
    IF job ? 'maximum_retry_count' THEN
      v_key := 'maximum_retry_count';
      v_maximum_retry_count := (job ->> 'maximum_retry_count')::integer;
    END IF;
    IF job ? 'run_at' THEN
      v_key := 'run_at';
      v_run_at := (job ->> 'run_at')::timestamptz;
    END IF;
    IF job ? 'batch_id' THEN
      v_key := 'batch_id';
      PERFORM (job ->> 'batch_id')::bigint;
    END IF;
  EXCEPTION WHEN data_exception THEN
    error_code := SQLSTATE; error_message := format('%s: %s', v_key, SQLERRM);
    RETURN;
  END;

  IF job ->> 'unique_key' = '' THEN
    error_code := '22023'; error_message := 'unique_key must not be empty';
    RETURN;
  ELSIF char_length(job ->> 'unique_key') > 500 THEN  -- as enqueue checks it
    error_code := '22001'; error_message := format('unique_key must be at most 500 characters, not %s', char_length(job ->> 'unique_key'));
    RETURN;
  END IF;

  IF job ? 'concurrency_key' OR job ? 'labels' THEN
    SELECT p.error_code, p.error_message INTO error_code, error_message
      FROM conveyor.flow_fields_problem(job ->> 'concurrency_key',
                                        ARRAY(SELECT jsonb_array_elements_text(job -> 'labels'))) AS p;
    IF error_code IS NOT NULL THEN
      RETURN;
    END IF;
  END IF;

  SELECT p.error_code, p.error_message INTO error_code, error_message
    FROM conveyor.job_problem(
           CASE WHEN job ? 'job_class' THEN job ->> 'job_class' END,
           coalesce(job -> 'args', '[]'), coalesce(job ->> 'queue', 'default'), v_priority,
           v_run_at, coalesce(job -> 'data', '{}'), v_maximum_retry_count) AS p;
END
$$;

COMMENT ON FUNCTION conveyor.job_json_problem(jsonb) IS
  'Internal. Checks one element of enqueue_many''s array (keys, JSON types, casts, then the '
  'rules of job_problem) and returns the SQLSTATE and message of the first problem, or two '
  'NULLs. Only called to explain a failed enqueue_many, so the fast path never pays for it.';

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

REVOKE ALL ON FUNCTION conveyor.job_json_problem(jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION conveyor.enqueue_many(jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION conveyor.enqueue_many(jsonb) TO conveyor_enqueuer;

COMMIT;
