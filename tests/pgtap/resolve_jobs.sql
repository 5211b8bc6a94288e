-- conveyor.resolve_jobs(action, ids, held), the one body of the three public
-- pairs, and the pairs themselves: finish_job/finish_jobs (mark jobs finished,
-- keep their rows), destroy_job/destroy_jobs (delete them), expire_job/
-- expire_jobs (mark them expired, keep their rows). The same 33 assertions run
-- for each pair (include/resolve_action.psql); only what happens to the row
-- differs, and pg_temp.resolved_as checks that.
--
-- A resolution keeps the job locked by a transaction-level lock until the
-- transaction ends. To see what remains once it has ended, one resolution runs
-- inside a savepoint and is rolled back to: that drops the transaction-level
-- lock (and the resolution), while the session-level unlock stays done.
-- Results needed after the rollback are carried over in psql variables.
BEGIN;
SELECT plan(102);

-- The row of job (its earlier state in the temp table before) after action:
-- finished or expired at now() and otherwise unchanged, or deleted.
CREATE FUNCTION pg_temp.resolved_as(action text, job bigint) RETURNS text LANGUAGE plpgsql AS $f$
BEGIN
  IF action = 'destroy' THEN
    RETURN is((SELECT count(*) FROM conveyor.jobs WHERE id = job), 0::bigint, 'the job''s row is deleted');
  END IF;
  RETURN results_eq(
    format($$SELECT id, priority, run_at, job_class, queue, args, data,
                   error_count, maximum_retry_count, last_error_message, last_error_backtrace, created_at,
                   finished_at, expired_at FROM conveyor.jobs WHERE id = %s$$, job),
    format($$SELECT id, priority, run_at, job_class, queue, args, data,
                   error_count, maximum_retry_count, last_error_message, last_error_backtrace, created_at,
                   %s FROM before WHERE id = %s$$,
           CASE action WHEN 'finish' THEN 'now(), NULL::timestamptz' ELSE 'NULL::timestamptz, now()' END, job),
    format('the job is %1$sed (%1$sed_at = now()), its row kept and otherwise unchanged',
           CASE action WHEN 'finish' THEN 'finish' ELSE 'expir' END));
END
$f$;

SELECT has_function('conveyor', 'resolve_jobs', ARRAY['text', 'bigint[]', 'bigint[]'],
  'conveyor.resolve_jobs(text, bigint[], bigint[]) exists');
SELECT throws_ok($$SELECT conveyor.resolve_jobs('archive', '{}')$$, '22023',
  'conveyor.resolve_jobs: action must be finish, destroy or expire, not archive',
  'resolve_jobs rejects an unknown action with 22023');
SELECT throws_ok($$SELECT conveyor.resolve_jobs(NULL, '{}')$$, '22023',
  'conveyor.resolve_jobs: action must be finish, destroy or expire, not NULL',
  'resolve_jobs rejects a NULL action with 22023');

\set action finish
\set one finish_job
\set many finish_jobs
\set one_fn conveyor.finish_job
\set many_fn conveyor.finish_jobs
\set one_args '{bigint,jsonb}'
\set many_args '{bigint[],bigint[],jsonb,"timestamp with time zone[]",text}'
\ir include/resolve_action.psql

\set action destroy
\set one destroy_job
\set many destroy_jobs
\set one_fn conveyor.destroy_job
\set many_fn conveyor.destroy_jobs
\set one_args '{bigint}'
\set many_args '{bigint[],bigint[]}'
\ir include/resolve_action.psql

\set action expire
\set one expire_job
\set many expire_jobs
\set one_fn conveyor.expire_job
\set many_fn conveyor.expire_jobs
\set one_args '{bigint}'
\set many_args '{bigint[],bigint[]}'
\ir include/resolve_action.psql

SELECT * FROM finish();
ROLLBACK;
