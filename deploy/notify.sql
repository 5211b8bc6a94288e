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
    )
    SELECT c.pid,
           jsonb_agg(jsonb_build_object('id', c.id, 'queue', c.queue, 'priority', c.priority, 'run_at', c.run_at)
                     ORDER BY c.priority, c.run_at, c.id) AS jobs
      FROM candidates AS c
     WHERE c.slot = c.id % c.slots
     GROUP BY c.pid
  LOOP
    PERFORM pg_catalog.pg_notify('conveyor_worker_' || v_target.pid,
                                 jsonb_build_object('jobs', v_target.jobs, 'more', v_more)::text);
  END LOOP;

  RETURN NULL;
END
$$;

COMMENT ON FUNCTION conveyor.tg_jobs__notify() IS
  'Trigger function of _900_notify: after an INSERT statement on conveyor.jobs, tells listening '
  'workers (conveyor.workers) about the ready jobs it inserted, on channel '
  'conveyor_worker_<pid>, with payload {"jobs": [{"id", "queue", "priority", "run_at"}], "more": bool}. '
  'At most 64 jobs are announced and one notification is sent per worker per statement. '
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
