-- start_attempt (change attempt_started): a worker records a running
-- attempt's start and worker; finished, expired and unknown jobs are left alone.
BEGIN;
SELECT plan(8);

CREATE TEMP TABLE fx (name text PRIMARY KEY, id bigint NOT NULL);
INSERT INTO fx SELECT n, id FROM unnest(ARRAY['one', 'two', 'finished', 'expired']) AS n,
  LATERAL conveyor.enqueue('tap.attempt.Job', jsonb_build_array(n), queue => 'tap_attempt');
UPDATE conveyor.jobs SET finished_at = now(), attempted_at = '2026-01-01 00:00:00+00', attempted_by = 'old:1'
 WHERE id = (SELECT id FROM fx WHERE name = 'finished');
UPDATE conveyor.jobs SET expired_at = now() WHERE id = (SELECT id FROM fx WHERE name = 'expired');
SELECT id AS one FROM fx WHERE name = 'one' \gset
SELECT id AS two FROM fx WHERE name = 'two' \gset
SELECT id AS finished FROM fx WHERE name = 'finished' \gset
SELECT id AS expired FROM fx WHERE name = 'expired' \gset

SELECT is((SELECT (id, attempted_at, attempted_by)::text
             FROM conveyor.start_attempt(:one, '2026-01-02 03:04:05+00', 'host:42')),
  (SELECT (:one::bigint, '2026-01-02 03:04:05+00'::timestamptz, 'host:42'::text)::text),
  'start_attempt returns the job with the attempt''s start and worker');
SELECT is((SELECT (attempted_at, attempted_by, state, error_count)::text FROM conveyor.jobs_view WHERE id = :one),
  (SELECT ('2026-01-02 03:04:05+00'::timestamptz, 'host:42'::text, 'ready'::text, 0)::text),
  'jobs_view shows them; the state and the error count are left alone (locks make running)');
SELECT is((SELECT attempted_at FROM conveyor.start_attempt(:two, attempted_by => 'host:43')), now(),
  'attempted_at defaults to now()');
SELECT is((SELECT count(*) FROM conveyor.start_attempt(:finished, now(), 'host:44')), 0::bigint,
  'a finished job: no row');
SELECT is((SELECT (attempted_at, attempted_by)::text FROM conveyor.jobs WHERE id = :finished),
  (SELECT ('2026-01-01 00:00:00+00'::timestamptz, 'old:1'::text)::text),
  'a finished job keeps the attempt that finished it');
SELECT is((SELECT count(*) FROM conveyor.start_attempt(:expired)), 0::bigint,
  'an expired job: no row');
SELECT is((SELECT count(*) FROM conveyor.start_attempt(-1)), 0::bigint,
  'an unknown id: no row');

-- The attempt's resolution reports the same start: retry_job keeps it in the history.
SELECT is((SELECT (errors -> 0 ->> 'worker') || ' ' || (attempted_at = '2026-01-02 03:04:05+00')::text
             FROM conveyor.retry_job(:one, 'Boom', NULL, 60, attempted_at => '2026-01-02 03:04:05+00', attempted_by => 'host:42')),
  'host:42 true', 'retry_job records the started attempt in the error history');

SELECT * FROM finish();
ROLLBACK;
