-- Revert conveyor:attempt_started from pg

BEGIN;

DROP FUNCTION conveyor.start_attempt(bigint, timestamptz, text);

-- The comments of the change job_history, exactly.
COMMENT ON COLUMN conveyor.jobs.attempted_at IS
  'When the latest resolved attempt started, as the worker reported it (NULL: never worked, '
  'or resolved without the worker saying).';
COMMENT ON COLUMN conveyor.jobs.attempted_by IS
  'The worker that made the latest resolved attempt: host:pid of its process (NULL when '
  'unknown).';

COMMIT;
