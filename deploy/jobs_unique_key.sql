-- Deploy conveyor:jobs_unique_key to pg
-- requires: jobs

BEGIN;

-- A job may carry a unique key; while it is unresolved (ready, scheduled,
-- running or awaiting a retry) no other unresolved job may carry the same key.
-- The rule is the partial unique index below, not a check-then-insert, so it
-- holds under concurrent enqueues: enqueue's INSERT ... ON CONFLICT waits for
-- an uncommitted holder of the key and then sees whether it committed.
-- Adding a column without a default rewrites nothing; building the index scans
-- the table once (no row has a key yet, so the index starts empty).
--
-- No check constraint for the key's length (1 to 500 characters): enqueue and
-- enqueue_many, the only writers of the column, enforce it. A table's check
-- constraints are prepared again for every single-row INSERT statement, and
-- one more cost enqueue about 9 % more backend CPU, measured A/B (see
-- docs/performance.md), for every job, with a key or not.
ALTER TABLE conveyor.jobs ADD COLUMN unique_key text;

CREATE UNIQUE INDEX jobs_unique_key_idx ON conveyor.jobs (unique_key)
  WHERE unique_key IS NOT NULL AND finished_at IS NULL AND expired_at IS NULL;

COMMENT ON COLUMN conveyor.jobs.unique_key IS
  'NULL, or a key (1 to 500 characters, checked by enqueue and enqueue_many) that at most one '
  'unresolved job carries at a time (index jobs_unique_key_idx): finishing, expiring or '
  'destroying the job frees it.';
COMMENT ON INDEX conveyor.jobs_unique_key_idx IS
  'At most one unresolved (neither finished nor expired) job per unique_key; enqueue and '
  'enqueue_many use it as their ON CONFLICT arbiter.';

COMMIT;
