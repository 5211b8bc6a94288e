-- Deploy conveyor:notify to pg
-- requires: jobs
-- requires: workers

BEGIN;

CREATE FUNCTION conveyor.tg_jobs__notify()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_target record;
  v_more boolean;
BEGIN
  IF lower(coalesce(current_setting('conveyor.notify', true), '')) IN ('off', 'false', '0', 'no') THEN
    RETURN NULL;
  END IF;
  IF NOT EXISTS (SELECT FROM conveyor.workers WHERE listening) THEN
    RETURN NULL;
  END IF;

  -- Announce at most 64 jobs per statement, the most urgent ready ones, each
  -- to one listening worker that serves its queue and has a worker thread
  -- allowed its priority, spread over those workers by job id. A worker gets
  -- one notification listing its jobs; "more" tells it the statement inserted
  -- ready jobs beyond the 64, to be found by polling. So a 10,000-row insert
  -- sends one notification per worker, not 10,000.
  v_more := (SELECT count(*) > 64 FROM new_jobs AS n WHERE n.run_at <= now());

  FOR v_target IN
    WITH announced AS (
      SELECT n.id, n.queue, n.priority, n.run_at
        FROM new_jobs AS n
       WHERE n.run_at <= now() AND n.finished_at IS NULL AND n.expired_at IS NULL
       ORDER BY n.priority, n.run_at, n.id
       LIMIT 64
    ), candidates AS (
      SELECT a.*, w.pid,
             row_number() OVER (PARTITION BY a.id ORDER BY w.pid) - 1 AS slot,
             count(*) OVER (PARTITION BY a.id) AS slots
        FROM announced AS a
        JOIN conveyor.workers AS w
          ON w.listening
         AND a.queue = ANY (w.queues)
         AND (w.max_priority IS NULL OR a.priority <= w.max_priority)
    ), assigned AS (
      SELECT c.pid, c.priority, c.run_at, c.id,
             jsonb_build_object('id', c.id, 'queue', c.queue, 'priority', c.priority, 'run_at', c.run_at) AS job
        FROM candidates AS c
       WHERE c.slot = c.id % c.slots
    ), sized AS (
      -- A NOTIFY payload must stay under 8,000 bytes: keep a worker's jobs,
      -- most urgent first, while they fit in 7,900 (one always fits: a job
      -- object is at most about 500 bytes), and tell it to poll for the rest.
      SELECT a.*, sum(octet_length(a.job::text) + 2) OVER (PARTITION BY a.pid ORDER BY a.priority, a.run_at, a.id) AS bytes
        FROM assigned AS a
    )
    SELECT s.pid,
           coalesce(jsonb_agg(s.job ORDER BY s.priority, s.run_at, s.id) FILTER (WHERE s.bytes <= 7900), '[]') AS jobs,
           bool_or(s.bytes > 7900) AS cut
      FROM sized AS s
     GROUP BY s.pid
  LOOP
    PERFORM pg_catalog.pg_notify('conveyor_worker_' || v_target.pid,
                                 jsonb_build_object('jobs', v_target.jobs, 'more', v_more OR v_target.cut)::text);
  END LOOP;

  RETURN NULL;
END
$$;

COMMENT ON FUNCTION conveyor.tg_jobs__notify() IS
  'Trigger function of _900_notify: after an INSERT statement on conveyor.jobs, tells listening '
  'workers (conveyor.workers) about the ready jobs it inserted, on channel '
  'conveyor_worker_<pid>, with payload {"jobs": [{"id", "queue", "priority", "run_at"}], "more": bool}. '
  'At most 64 jobs are announced, one notification is sent per worker per statement, and a '
  'payload stays under 8,000 bytes ("more" is true when jobs were left out). '
  'Jobs with a future run_at are not announced. SET LOCAL conveyor.notify = off silences it.';

CREATE TRIGGER _900_notify
  AFTER INSERT ON conveyor.jobs
  REFERENCING NEW TABLE AS new_jobs
  FOR EACH STATEMENT
  EXECUTE FUNCTION conveyor.tg_jobs__notify();

COMMENT ON TRIGGER _900_notify ON conveyor.jobs IS
  'Announces newly inserted ready jobs to listening workers; see conveyor.tg_jobs__notify().';

REVOKE ALL ON FUNCTION conveyor.tg_jobs__notify() FROM PUBLIC;

COMMIT;
