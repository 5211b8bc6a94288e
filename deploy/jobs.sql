-- Deploy conveyor:jobs to pg
-- requires: schema
-- requires: roles

BEGIN;

-- The home of the job limits. enqueue, enqueue_many, retry_job and lock_jobs
-- read them from here; the planner inlines the call and folds it to the
-- number when it plans the calling statement (once per session in PL/pgSQL),
-- so it costs nothing per call. An unknown name fails when the caller is
-- planned: the ELSE branch casts a message to integer.
CREATE FUNCTION conveyor.job_limit(name text)
RETURNS integer
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
RETURN CASE job_limit.name
         WHEN 'job_class' THEN 500               -- characters
         WHEN 'queue' THEN 100                   -- characters
         WHEN 'priority' THEN 32767              -- highest priority number (smallint)
         WHEN 'last_error_message' THEN 1000     -- characters kept
         WHEN 'last_error_backtrace' THEN 10000  -- characters kept
         ELSE ('conveyor.job_limit: no limit named ' || job_limit.name)::integer
       END;

COMMENT ON FUNCTION conveyor.job_limit(text) IS
  'Internal. The job limits, by name: job_class 500 and queue 100 characters, priority 32767 '
  'at most, last_error_message 1,000 and last_error_backtrace 10,000 characters kept. The one '
  'home of these numbers for the functions (inlined and folded by the planner); the table''s '
  'check constraints repeat them as literals, as a function call there would cost every insert '
  'tens of microseconds, and tests/pgtap/jobs_table.sql proves the two agree. Errors: 22P02 an '
  'unknown name.';

REVOKE ALL ON FUNCTION conveyor.job_limit(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION conveyor.job_limit(text) TO conveyor_worker;

-- Column defaults: the home of the job defaults (queue 'default', priority
-- 100, maximum_retry_count 15). enqueue's signature and enqueue_many repeat
-- them; tests/pgtap/jobs_table.sql proves all three agree.
CREATE TABLE conveyor.jobs (
  id                   bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  priority             smallint    NOT NULL DEFAULT 100,
  run_at               timestamptz NOT NULL DEFAULT now(),
  job_class            text        NOT NULL,
  queue                text        NOT NULL DEFAULT 'default',
  args                 jsonb       NOT NULL DEFAULT '[]',
  data                 jsonb       NOT NULL DEFAULT '{}',
  error_count          integer     NOT NULL DEFAULT 0,
  maximum_retry_count  integer     NOT NULL DEFAULT 15,
  last_error_message   text,
  last_error_backtrace text,
  finished_at          timestamptz,
  expired_at           timestamptz,
  created_at           timestamptz NOT NULL DEFAULT now(),

  CONSTRAINT jobs_priority_in_range CHECK (priority >= 0),
  CONSTRAINT jobs_job_class_length CHECK (char_length(job_class) BETWEEN 1 AND 500),
  CONSTRAINT jobs_queue_length CHECK (char_length(queue) BETWEEN 1 AND 100),
  CONSTRAINT jobs_args_is_array CHECK (jsonb_typeof(args) = 'array'),
  CONSTRAINT jobs_data_is_object CHECK (jsonb_typeof(data) = 'object'),
  CONSTRAINT jobs_error_count_not_negative CHECK (error_count >= 0),
  CONSTRAINT jobs_maximum_retry_count_not_negative CHECK (maximum_retry_count >= 0),
  CONSTRAINT jobs_last_error_message_length CHECK (char_length(last_error_message) <= 1000),
  CONSTRAINT jobs_last_error_backtrace_length CHECK (char_length(last_error_backtrace) <= 10000),
  CONSTRAINT jobs_not_both_finished_and_expired CHECK (finished_at IS NULL OR expired_at IS NULL)
)
-- The table is high-churn: every job is inserted, updated or deleted once and
-- soon dead. Vacuum it after 1 % (+1000 rows) of change instead of 20 %, and
-- without cost-based sleeps: a healthy queue table is small, so an unthrottled
-- vacuum is short, while a delayed one lets dead index entries pile up in
-- front of the ready jobs and slows every lock_jobs call.
WITH (
  autovacuum_vacuum_scale_factor = 0.01,
  autovacuum_vacuum_threshold = 1000,
  autovacuum_vacuum_insert_scale_factor = 0.01,
  autovacuum_analyze_scale_factor = 0.02,
  autovacuum_vacuum_cost_delay = 0
);

-- lock_jobs walks this index in (priority, run_at, id) order within each
-- queue. It holds only unresolved jobs, so finished and expired rows kept for
-- inspection never slow locking down.
CREATE INDEX jobs_ready_idx ON conveyor.jobs (queue, priority, run_at, id)
  WHERE finished_at IS NULL AND expired_at IS NULL;

-- Clean-up of old finished or expired rows finds them without a full scan.
CREATE INDEX jobs_resolved_idx ON conveyor.jobs (coalesce(finished_at, expired_at))
  WHERE finished_at IS NOT NULL OR expired_at IS NOT NULL;

COMMENT ON TABLE conveyor.jobs IS
  'One row per job. Ready: run_at <= now() and neither finished_at nor expired_at set. '
  'Working: some session holds the job''s advisory lock (see docs/reference/protocol.md). '
  'Write through the conveyor functions; the table is the implementation, not the API.';
COMMENT ON COLUMN conveyor.jobs.id IS 'Identity; also the job''s advisory-lock key (key1 = 1129270870 # (id >> 32), key2 = low 32 bits).';
COMMENT ON COLUMN conveyor.jobs.priority IS 'Lower runs first; 0 to 32767; default 100.';
COMMENT ON COLUMN conveyor.jobs.run_at IS 'The job is not worked before this time.';
COMMENT ON COLUMN conveyor.jobs.job_class IS 'The job''s name in the language that works it (1 to 500 characters).';
COMMENT ON COLUMN conveyor.jobs.queue IS 'Workers serve named queues (1 to 100 characters); default ''default''.';
COMMENT ON COLUMN conveyor.jobs.args IS 'Positional arguments: a JSON array.';
COMMENT ON COLUMN conveyor.jobs.data IS 'Metadata such as tags: a JSON object.';
COMMENT ON COLUMN conveyor.jobs.error_count IS 'How many errors retry_job has recorded.';
COMMENT ON COLUMN conveyor.jobs.maximum_retry_count IS 'retry_job expires the job once error_count exceeds this.';
COMMENT ON COLUMN conveyor.jobs.last_error_message IS 'The latest error''s message, cut to 1,000 characters.';
COMMENT ON COLUMN conveyor.jobs.last_error_backtrace IS 'The latest error''s backtrace, cut to 10,000 characters.';
COMMENT ON COLUMN conveyor.jobs.finished_at IS 'Set by finish_job: the job is done and the row kept.';
COMMENT ON COLUMN conveyor.jobs.expired_at IS 'Set by expire_job, or by retry_job past maximum_retry_count: never retried.';
COMMENT ON COLUMN conveyor.jobs.created_at IS 'When the job was enqueued.';

REVOKE ALL ON conveyor.jobs FROM PUBLIC;
-- Workers read, update and delete rows through the SECURITY INVOKER
-- functions. Enqueuers get nothing: enqueue is SECURITY DEFINER, so they can
-- add jobs without reading anyone's arguments.
GRANT SELECT, UPDATE, DELETE ON conveyor.jobs TO conveyor_worker;

COMMIT;
