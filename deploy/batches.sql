-- Deploy conveyor:batches to pg
-- requires: flow_columns
-- requires: enqueue_many

BEGIN;

-- A batch groups jobs (jobs.batch_id) and enqueues callback jobs when they are
-- done. The rules that make each callback fire exactly once:
--
-- * A batch is open until close_batch(): on_finish cannot fire while more jobs
--   may still join, so a job added after the others resolved is waited for.
-- * Every decision to fire is taken by a session holding the batch row's lock
--   (FOR NO KEY UPDATE), and is recorded in that row (finished_at,
--   discarded_at) by the same transaction that enqueues the callback. Two
--   sessions resolving the last two jobs at the same instant queue on the
--   row; the second reads the row as the first committed it, and its next
--   statement (a new snapshot in READ COMMITTED) sees the first's job gone.
-- * An enqueue into a batch takes FOR KEY SHARE on the row and close_batch
--   FOR UPDATE, so an enqueue either commits before the close reads the jobs
--   or fails because the batch is closed. Enqueues into one batch never wait
--   for each other, nor for resolutions (KEY SHARE and NO KEY UPDATE do not
--   conflict).
CREATE TABLE conveyor.batches (
  id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  description     text,
  on_finish       jsonb,
  on_success      jsonb,
  on_discard      jsonb,
  properties      jsonb       NOT NULL DEFAULT '{}',
  created_at      timestamptz NOT NULL DEFAULT now(),
  closed_at       timestamptz,
  finished_at     timestamptz,
  discarded_at    timestamptz,
  finished_count  bigint      NOT NULL DEFAULT 0,
  expired_count   bigint      NOT NULL DEFAULT 0,
  destroyed_count bigint      NOT NULL DEFAULT 0,
  on_finish_job_id  bigint,
  on_success_job_id bigint,
  on_discard_job_id bigint,

  CONSTRAINT batches_description_length CHECK (char_length(description) <= 1000),
  CONSTRAINT batches_properties_is_object CHECK (jsonb_typeof(properties) = 'object'),
  CONSTRAINT batches_callbacks_are_objects CHECK (
    coalesce(jsonb_typeof(on_finish), 'object') = 'object'
    AND coalesce(jsonb_typeof(on_success), 'object') = 'object'
    AND coalesce(jsonb_typeof(on_discard), 'object') = 'object'),
  CONSTRAINT batches_finished_only_when_closed CHECK (finished_at IS NULL OR closed_at IS NOT NULL)
);

COMMENT ON TABLE conveyor.batches IS
  'One row per batch of jobs (jobs.batch_id), made by create_batch, closed by close_batch; '
  'the row records which callbacks have fired, so each fires once. Read it through '
  'batch_stats; write it through the functions.';
COMMENT ON COLUMN conveyor.batches.description IS 'Free text for people (at most 1,000 characters).';
COMMENT ON COLUMN conveyor.batches.on_finish IS
  'NULL, or the job enqueued once when the batch is closed and all its jobs are resolved: an '
  'object with enqueue_many''s keys ({"job_class": ..., "args": [...], "queue": ..., ...}).';
COMMENT ON COLUMN conveyor.batches.on_success IS 'As on_finish, enqueued with it only when no job of the batch expired.';
COMMENT ON COLUMN conveyor.batches.on_discard IS 'As on_finish, enqueued once when the first job of the batch expires.';
COMMENT ON COLUMN conveyor.batches.properties IS 'A JSON object handed to every callback job (data.batch.properties).';
COMMENT ON COLUMN conveyor.batches.closed_at IS 'Set by close_batch: no job may join the batch any more.';
COMMENT ON COLUMN conveyor.batches.finished_at IS 'Set when the batch was closed and all its jobs were resolved: on_finish (and on_success) fired.';
COMMENT ON COLUMN conveyor.batches.discarded_at IS 'Set when the first job of the batch expired: on_discard fired.';
COMMENT ON COLUMN conveyor.batches.finished_count IS 'Jobs of the batch resolved by finish_job (counted when it happened, so a later clean-up of the rows does not change it).';
COMMENT ON COLUMN conveyor.batches.expired_count IS 'Jobs of the batch resolved by expiring (expire_job, retry_job past its retries).';
COMMENT ON COLUMN conveyor.batches.destroyed_count IS 'Jobs of the batch resolved by being deleted unresolved (destroy_job, the usual end of a job that worked).';
COMMENT ON COLUMN conveyor.batches.on_finish_job_id IS 'The id of the on_finish job enqueued, once it fired.';
COMMENT ON COLUMN conveyor.batches.on_success_job_id IS 'The id of the on_success job enqueued, once it fired.';
COMMENT ON COLUMN conveyor.batches.on_discard_job_id IS 'The id of the on_discard job enqueued, once it fired.';

-- Nobody reads or writes the table directly: every function below is
-- SECURITY DEFINER, so an enqueuer can make batches and a worker resolving a
-- job can fire callbacks without privileges on it.
REVOKE ALL ON conveyor.batches FROM PUBLIC;

-- Which jobs of a batch are unresolved: the test "is the batch done" is one
-- probe of this index. Partial, so jobs without a batch (and resolved ones)
-- are not in it: for them the index costs the evaluation of its predicate.
CREATE INDEX jobs_batch_unresolved_idx ON conveyor.jobs (batch_id)
  WHERE batch_id IS NOT NULL AND finished_at IS NULL AND expired_at IS NULL;

COMMENT ON INDEX conveyor.jobs_batch_unresolved_idx IS
  'The unresolved jobs of each batch: whether a batch is done is one probe of it.';

CREATE FUNCTION conveyor.batch_callback_problem(callback jsonb, OUT error_code text, OUT error_message text)
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF callback IS NULL THEN
    RETURN;
  ELSIF jsonb_typeof(callback) = 'object' AND callback ? 'batch_id' THEN
    -- A callback joining a batch would keep that batch (maybe its own) from finishing.
    error_code := '22023'; error_message := 'a callback cannot join a batch (batch_id)';
  ELSIF jsonb_typeof(callback) = 'object' AND NOT callback ? 'job_class' THEN
    error_code := '22023'; error_message := 'job_class is required';
  ELSE
    SELECT p.error_code, p.error_message INTO error_code, error_message
      FROM conveyor.job_json_problem(callback) AS p;
  END IF;
END
$$;

COMMENT ON FUNCTION conveyor.batch_callback_problem(jsonb) IS
  'Internal. Checks a callback job description of create_batch: NULL (no callback), or a JSON '
  'object that enqueue_many would accept as one job (job_json_problem), with a job_class and '
  'no batch_id. Returns the SQLSTATE and message of the first problem, or two NULLs.';

CREATE FUNCTION conveyor.create_batch(
  description text DEFAULT NULL,
  on_finish jsonb DEFAULT NULL,
  on_success jsonb DEFAULT NULL,
  on_discard jsonb DEFAULT NULL,
  properties jsonb DEFAULT '{}'
)
RETURNS bigint
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_problem record;
  v_name text;
  v_callback jsonb;
  v_id bigint;
BEGIN
  IF char_length(create_batch.description) > 1000 THEN
    RAISE EXCEPTION 'conveyor.create_batch: description must be at most 1000 characters, not %',
      char_length(create_batch.description) USING ERRCODE = '22001';
  ELSIF create_batch.properties IS NULL THEN
    RAISE EXCEPTION 'conveyor.create_batch: properties must not be NULL' USING ERRCODE = '22004';
  ELSIF jsonb_typeof(create_batch.properties) <> 'object' THEN
    RAISE EXCEPTION 'conveyor.create_batch: properties must be a JSON object, not %',
      jsonb_typeof(create_batch.properties) USING ERRCODE = '22023';
  END IF;

  -- A bad callback fails now, in the creator's hands, not later inside the
  -- transaction of whichever worker resolves the last job.
  FOR v_name, v_callback IN
    VALUES ('on_finish', create_batch.on_finish), ('on_success', create_batch.on_success),
           ('on_discard', create_batch.on_discard)
  LOOP
    v_problem := conveyor.batch_callback_problem(v_callback);
    IF v_problem.error_code IS NOT NULL THEN
      RAISE EXCEPTION 'conveyor.create_batch: %: %', v_name, v_problem.error_message
        USING ERRCODE = v_problem.error_code;
    END IF;
  END LOOP;

  INSERT INTO conveyor.batches (description, on_finish, on_success, on_discard, properties)
  VALUES (create_batch.description, create_batch.on_finish, create_batch.on_success,
          create_batch.on_discard, create_batch.properties)
  RETURNING id INTO v_id;
  RETURN v_id;
END
$$;

COMMENT ON FUNCTION conveyor.create_batch(text, jsonb, jsonb, jsonb, jsonb) IS
  'Creates an open batch and returns its id; enqueue jobs into it with batch_id, then '
  'close_batch. description: free text (at most 1,000 characters). on_finish, on_success, '
  'on_discard: NULL or a job description with enqueue_many''s keys ({"job_class": "Notify", '
  '"args": [1], "queue": "mail", "priority": 10, ...}; job_class required, no batch_id), '
  'enqueued once: on_finish when the batch is closed and all its jobs are resolved '
  '(finished, expired or destroyed), on_success at the same moment if no job expired, '
  'on_discard when the first job expires. The callback job''s data gets a key "batch": '
  '{"id", "event" (finish, success or discard), "description", "properties"}. properties: a '
  'JSON object (default {}). Errors: as enqueue_many for a bad callback (22023, 22004, 22003, '
  '22001, 22007/22008 run_at), 22001 a long description, 22004 NULL properties, 22023 '
  'properties not an object. SECURITY DEFINER; granted to conveyor_enqueuer (and so to '
  'conveyor_worker): whoever may enqueue jobs may group them.';

-- Enqueues one callback of a batch whose row the caller has locked, and
-- records it; the caller decides that it is due.
CREATE FUNCTION conveyor.enqueue_batch_callback(batch conveyor.batches, event text)
RETURNS bigint
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_callback jsonb := CASE enqueue_batch_callback.event
                        WHEN 'finish' THEN batch.on_finish
                        WHEN 'success' THEN batch.on_success
                        WHEN 'discard' THEN batch.on_discard
                      END;
  v_id bigint;
BEGIN
  IF v_callback IS NULL THEN
    RETURN NULL;
  END IF;
  -- Through enqueue_many, so the callback gets enqueue's checks, defaults and
  -- NOTIFY, and whatever keys enqueue_many learns.
  SELECT e.id INTO v_id
    FROM conveyor.enqueue_many(jsonb_build_array(
           v_callback || jsonb_build_object('data', coalesce(v_callback -> 'data', '{}') || jsonb_build_object(
             'batch', jsonb_build_object('id', batch.id, 'event', enqueue_batch_callback.event,
                                         'description', batch.description,
                                         'properties', batch.properties))))) AS e(id);
  RETURN v_id;
END
$$;

COMMENT ON FUNCTION conveyor.enqueue_batch_callback(conveyor.batches, text) IS
  'Internal. Enqueues the batch''s callback for event (finish, success or discard) through '
  'enqueue_many, with data.batch = {id, event, description, properties}; returns the job id, '
  'or NULL when the batch has no such callback. The caller holds the batch row''s lock and '
  'records the firing.';

-- Fires on_finish and on_success of a batch whose row the caller has locked
-- FOR NO KEY UPDATE (or FOR UPDATE), if it is closed, not yet finished, and
-- has no unresolved job left. Called by close_batch and by the resolution
-- trigger.
CREATE FUNCTION conveyor.finish_batch_if_done(batch conveyor.batches)
RETURNS boolean
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF batch.closed_at IS NULL OR batch.finished_at IS NOT NULL THEN
    RETURN false;
  END IF;
  -- A new statement, so a new snapshot: it sees every resolution committed
  -- before the caller got the batch row's lock.
  IF EXISTS (SELECT FROM conveyor.jobs AS j
              WHERE j.batch_id = batch.id AND j.finished_at IS NULL AND j.expired_at IS NULL) THEN
    RETURN false;
  END IF;
  UPDATE conveyor.batches AS b
     SET finished_at = now(),
         on_finish_job_id = conveyor.enqueue_batch_callback(batch, 'finish'),
         on_success_job_id = CASE WHEN b.discarded_at IS NULL
                                  THEN conveyor.enqueue_batch_callback(batch, 'success') END
   WHERE b.id = batch.id;
  RETURN true;
END
$$;

COMMENT ON FUNCTION conveyor.finish_batch_if_done(conveyor.batches) IS
  'Internal. For a batch whose row the caller has locked: when it is closed, not finished, and '
  'none of its jobs is unresolved, sets finished_at and enqueues on_finish and (if no job '
  'expired) on_success; returns whether it did.';

CREATE FUNCTION conveyor.close_batch(id bigint)
RETURNS boolean
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_batch conveyor.batches;
BEGIN
  -- FOR UPDATE, the one lock that conflicts with the FOR KEY SHARE of an
  -- enqueue into the batch: an uncommitted enqueue finishes first.
  SELECT * INTO v_batch FROM conveyor.batches AS b WHERE b.id = close_batch.id FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'conveyor.close_batch: no batch %', coalesce(close_batch.id::text, 'NULL')
      USING ERRCODE = 'P0002';
  ELSIF v_batch.closed_at IS NOT NULL THEN
    RETURN false;
  END IF;
  UPDATE conveyor.batches AS b SET closed_at = now() WHERE b.id = close_batch.id
  RETURNING * INTO v_batch;
  -- An empty batch, or one whose jobs are all resolved already, is done now.
  PERFORM conveyor.finish_batch_if_done(v_batch);
  RETURN true;
END
$$;

COMMENT ON FUNCTION conveyor.close_batch(bigint) IS
  'Closes the batch: no job may join it any more, and once all its jobs are resolved (now, '
  'for a batch that is empty or done) on_finish and on_success are enqueued, in the '
  'transaction that sees the last one resolved. Returns true when it closed the batch, false '
  'when it was already closed. Waits for transactions enqueueing into the batch (row lock). '
  'Errors: P0002 no such batch. SECURITY DEFINER; granted to conveyor_enqueuer.';

-- The trigger functions are SECURITY DEFINER: the worker that resolves a job,
-- or the enqueuer that adds one, needs no privilege on conveyor.batches.
CREATE FUNCTION conveyor.tg_jobs__join_batch()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_closed_at timestamptz;
BEGIN
  -- FOR KEY SHARE: conflicts only with close_batch's FOR UPDATE, so the batch
  -- cannot be closed under an uncommitted enqueue.
  SELECT b.closed_at INTO v_closed_at FROM conveyor.batches AS b WHERE b.id = NEW.batch_id FOR KEY SHARE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'conveyor: no batch % (create it with conveyor.create_batch)', NEW.batch_id
      USING ERRCODE = '23503';
  ELSIF v_closed_at IS NOT NULL THEN
    RAISE EXCEPTION 'conveyor: batch % is closed; no job may join it', NEW.batch_id
      USING ERRCODE = '55000';
  END IF;
  RETURN NEW;
END
$$;

COMMENT ON FUNCTION conveyor.tg_jobs__join_batch() IS
  'Internal. Before a job with a batch_id is inserted: the batch must exist (else 23503) and '
  'be open (else 55000). Takes FOR KEY SHARE on the batch row until commit, so close_batch '
  'waits for the enqueue.';

CREATE TRIGGER _100_join_batch
BEFORE INSERT ON conveyor.jobs
FOR EACH ROW
WHEN (NEW.batch_id IS NOT NULL)
EXECUTE FUNCTION conveyor.tg_jobs__join_batch();

COMMENT ON TRIGGER _100_join_batch ON conveyor.jobs IS
  'Checks that a job joining a batch joins an open one; jobs without a batch skip it (WHEN).';

CREATE FUNCTION conveyor.tg_jobs__resolve_in_batch()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_event text;
  v_batch conveyor.batches;
BEGIN
  IF TG_OP = 'DELETE' THEN
    v_event := 'destroy';
  ELSIF NEW.expired_at IS NOT NULL THEN
    v_event := 'expire';
  ELSE
    v_event := 'finish';
  END IF;

  -- The batch row's lock serializes every decision about this batch; a
  -- second resolver waits here until the first commits.
  UPDATE conveyor.batches AS b
     SET finished_count = b.finished_count + (v_event = 'finish')::integer,
         expired_count = b.expired_count + (v_event = 'expire')::integer,
         destroyed_count = b.destroyed_count + (v_event = 'destroy')::integer
   WHERE b.id = OLD.batch_id
  RETURNING * INTO v_batch;
  IF NOT FOUND THEN
    RETURN NULL;  -- cannot happen while batches are never deleted; nothing to fire
  END IF;

  IF v_event = 'expire' AND v_batch.discarded_at IS NULL THEN
    UPDATE conveyor.batches AS b
       SET discarded_at = now(),
           on_discard_job_id = conveyor.enqueue_batch_callback(v_batch, 'discard')
     WHERE b.id = v_batch.id
    RETURNING * INTO v_batch;
  END IF;

  PERFORM conveyor.finish_batch_if_done(v_batch);
  RETURN NULL;
END
$$;

COMMENT ON FUNCTION conveyor.tg_jobs__resolve_in_batch() IS
  'Internal. After a job of a batch is resolved (finished, expired, or deleted while '
  'unresolved): locks the batch row (FOR NO KEY UPDATE, through an UPDATE of its counts), '
  'enqueues on_discard at the first expiry, and on_finish / on_success when the batch is '
  'closed and this was its last unresolved job.';

CREATE TRIGGER _200_resolve_in_batch
AFTER UPDATE OF finished_at, expired_at ON conveyor.jobs
FOR EACH ROW
WHEN (NEW.batch_id IS NOT NULL AND OLD.finished_at IS NULL AND OLD.expired_at IS NULL
      AND (NEW.finished_at IS NOT NULL OR NEW.expired_at IS NOT NULL))
EXECUTE FUNCTION conveyor.tg_jobs__resolve_in_batch();

CREATE TRIGGER _200_destroy_in_batch
AFTER DELETE ON conveyor.jobs
FOR EACH ROW
WHEN (OLD.batch_id IS NOT NULL AND OLD.finished_at IS NULL AND OLD.expired_at IS NULL)
EXECUTE FUNCTION conveyor.tg_jobs__resolve_in_batch();

COMMENT ON TRIGGER _200_resolve_in_batch ON conveyor.jobs IS
  'Counts a job of a batch that is finished or expired and fires the batch''s callbacks when '
  'due; jobs without a batch skip it (WHEN), so they queue no trigger event.';
COMMENT ON TRIGGER _200_destroy_in_batch ON conveyor.jobs IS
  'Counts a job of a batch deleted while unresolved and fires the batch''s callbacks when '
  'due; jobs without a batch, and clean-up of resolved rows, skip it (WHEN).';

CREATE FUNCTION conveyor.batch_stats(id bigint)
RETURNS TABLE (
  batch_id bigint,
  description text,
  properties jsonb,
  created_at timestamptz,
  closed_at timestamptz,
  finished_at timestamptz,
  discarded_at timestamptz,
  ready bigint,
  scheduled bigint,
  retrying bigint,
  running bigint,
  finished bigint,
  expired bigint,
  destroyed bigint,
  total bigint
)
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  RETURN QUERY
  WITH unresolved AS (
    -- The state definition of jobs_view, for unresolved jobs: running (some
    -- session holds the lock), retrying, scheduled, ready.
    SELECT CASE WHEN w.id IS NOT NULL THEN 'running'
                WHEN j.run_at > now() AND j.error_count > 0 THEN 'retrying'
                WHEN j.run_at > now() THEN 'scheduled'
                ELSE 'ready' END AS state
      FROM conveyor.jobs AS j
      LEFT JOIN conveyor.working_job_ids() AS w(id) ON w.id = j.id
     WHERE j.batch_id = batch_stats.id AND j.finished_at IS NULL AND j.expired_at IS NULL
  ), counts AS (
    SELECT count(*) FILTER (WHERE u.state = 'ready') AS ready,
           count(*) FILTER (WHERE u.state = 'scheduled') AS scheduled,
           count(*) FILTER (WHERE u.state = 'retrying') AS retrying,
           count(*) FILTER (WHERE u.state = 'running') AS running
      FROM unresolved AS u
  )
  SELECT b.id, b.description, b.properties, b.created_at, b.closed_at, b.finished_at, b.discarded_at,
         c.ready, c.scheduled, c.retrying, c.running,
         b.finished_count, b.expired_count, b.destroyed_count,
         c.ready + c.scheduled + c.retrying + c.running
           + b.finished_count + b.expired_count + b.destroyed_count
    FROM conveyor.batches AS b CROSS JOIN counts AS c
   WHERE b.id = batch_stats.id;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'conveyor.batch_stats: no batch %', coalesce(batch_stats.id::text, 'NULL')
      USING ERRCODE = 'P0002';
  END IF;
END
$$;

COMMENT ON FUNCTION conveyor.batch_stats(bigint) IS
  'One row for the batch: its description, properties and times (created, closed, finished '
  '= on_finish fired, discarded = first expiry), then its jobs counted by state: ready, '
  'scheduled, retrying, running (from pg_locks), as jobs_view defines them, among the '
  'unresolved; finished, expired and destroyed as counted when they were resolved (a later '
  'clean-up of rows does not change them); total, their sum. Errors: P0002 no such batch. '
  'SECURITY DEFINER (counts only, no job arguments); granted to conveyor_enqueuer, so whoever '
  'made a batch can follow it. Locks nothing.';

REVOKE ALL ON FUNCTION conveyor.batch_callback_problem(jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION conveyor.create_batch(text, jsonb, jsonb, jsonb, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION conveyor.enqueue_batch_callback(conveyor.batches, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION conveyor.finish_batch_if_done(conveyor.batches) FROM PUBLIC;
REVOKE ALL ON FUNCTION conveyor.close_batch(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION conveyor.tg_jobs__join_batch() FROM PUBLIC;
REVOKE ALL ON FUNCTION conveyor.tg_jobs__resolve_in_batch() FROM PUBLIC;
REVOKE ALL ON FUNCTION conveyor.batch_stats(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION conveyor.create_batch(text, jsonb, jsonb, jsonb, jsonb) TO conveyor_enqueuer;
GRANT EXECUTE ON FUNCTION conveyor.close_batch(bigint) TO conveyor_enqueuer;
GRANT EXECUTE ON FUNCTION conveyor.batch_stats(bigint) TO conveyor_enqueuer;

COMMIT;
