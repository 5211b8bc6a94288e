-- Deploy conveyor:lockers to pg
-- requires: register_worker
-- requires: notify

BEGIN;

-- The registry holds one row per locker session (Que's que_lockers), not per
-- worker thread: conveyor.workers becomes conveyor.lockers, and its functions
-- register_worker, unregister_worker and prune_workers become register_locker,
-- unregister_locker and prune_lockers, with the same arguments. The channel
-- name (conveyor_worker_<pid>) is unchanged.

ALTER TABLE conveyor.workers RENAME TO lockers;
ALTER TABLE conveyor.lockers RENAME CONSTRAINT workers_pkey TO lockers_pkey;
ALTER TABLE conveyor.lockers RENAME CONSTRAINT workers_queues_not_empty TO lockers_queues_not_empty;
ALTER TABLE conveyor.lockers RENAME CONSTRAINT workers_has_workers TO lockers_has_workers;

COMMENT ON TABLE conveyor.lockers IS
  'The registry of live lockers (Que''s que_lockers): one row per worker process''s locker '
  'session, written by register_locker and read by the NOTIFY trigger to choose whom to tell '
  'about a job.';

DROP FUNCTION conveyor.unregister_worker();
DROP FUNCTION conveyor.register_worker(text[], integer[], text, integer, boolean);
DROP FUNCTION conveyor.prune_workers();

CREATE FUNCTION conveyor.prune_lockers()
RETURNS integer
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_pruned integer;
BEGIN
  -- A row is stale when the server restarted since it registered, when no
  -- session has its pid any more, or when the pid now belongs to a session
  -- that started later (pid reuse). backend_start of other users' sessions
  -- may be hidden (NULL) from an unprivileged role: then the pid check alone
  -- decides.
  DELETE FROM conveyor.lockers AS w
   WHERE w.postmaster_start <> pg_catalog.pg_postmaster_start_time()
      OR NOT EXISTS (SELECT FROM pg_catalog.pg_stat_activity AS a WHERE a.pid = w.pid)
      OR EXISTS (SELECT FROM pg_catalog.pg_stat_activity AS a
                  WHERE a.pid = w.pid AND a.backend_start IS DISTINCT FROM w.backend_start
                    AND a.backend_start IS NOT NULL AND w.backend_start IS NOT NULL);
  GET DIAGNOSTICS v_pruned = ROW_COUNT;
  RETURN v_pruned;
END
$$;

COMMENT ON FUNCTION conveyor.prune_lockers() IS
  'Deletes locker rows whose session is gone (ended, or from before a server restart) and '
  'returns how many. register_locker calls it; a worker may call it when it polls.';

CREATE FUNCTION conveyor.register_locker(
  queues text[],
  worker_priorities integer[],
  hostname text DEFAULT NULL,
  process_id integer DEFAULT NULL,
  listening boolean DEFAULT true
)
RETURNS text
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF register_locker.queues IS NULL OR cardinality(register_locker.queues) = 0
     OR array_position(register_locker.queues, NULL) IS NOT NULL THEN
    RAISE EXCEPTION 'conveyor.register_locker: queues must name at least one queue, without NULLs'
      USING ERRCODE = '22023';
  ELSIF register_locker.worker_priorities IS NULL OR cardinality(register_locker.worker_priorities) = 0 THEN
    RAISE EXCEPTION 'conveyor.register_locker: worker_priorities must have one entry per worker (NULL = any priority)'
      USING ERRCODE = '22023';
  END IF;

  PERFORM conveyor.prune_lockers();

  INSERT INTO conveyor.lockers AS w
         (pid, backend_start, hostname, process_id, queues, worker_priorities, max_priority, listening)
  VALUES (pg_catalog.pg_backend_pid(),
          (SELECT a.backend_start FROM pg_catalog.pg_stat_activity AS a WHERE a.pid = pg_catalog.pg_backend_pid()),
          register_locker.hostname, register_locker.process_id, register_locker.queues,
          register_locker.worker_priorities,
          CASE WHEN array_position(register_locker.worker_priorities, NULL) IS NULL
               THEN (SELECT max(p) FROM unnest(register_locker.worker_priorities) AS p) END,
          register_locker.listening)
  ON CONFLICT (pid) DO UPDATE
     SET backend_start = excluded.backend_start, postmaster_start = excluded.postmaster_start,
         hostname = excluded.hostname, process_id = excluded.process_id, queues = excluded.queues,
         worker_priorities = excluded.worker_priorities, max_priority = excluded.max_priority,
         listening = excluded.listening, started_at = now();

  RETURN 'conveyor_worker_' || pg_catalog.pg_backend_pid();
END
$$;

COMMENT ON FUNCTION conveyor.register_locker(text[], integer[], text, integer, boolean) IS
  'Registers the calling session as a worker process''s locker in conveyor.lockers: the queues it serves and one priority '
  'ceiling per worker thread (NULL = any priority), for the NOTIFY trigger to choose whom to '
  'tell about new jobs; hostname and process_id are for operators. Replaces this session''s '
  'earlier registration, prunes stale rows, and returns the channel to LISTEN on '
  '(conveyor_worker_<backend pid>). Errors: 22023 no queues, a NULL queue, no workers.';

CREATE FUNCTION conveyor.unregister_locker()
RETURNS boolean
LANGUAGE sql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
  WITH gone AS (DELETE FROM conveyor.lockers WHERE pid = pg_catalog.pg_backend_pid() RETURNING pid)
  SELECT EXISTS (SELECT FROM gone);
$$;

COMMENT ON FUNCTION conveyor.unregister_locker() IS
  'Removes the calling session''s registration; true when there was one. A worker that dies '
  'needs no call: prune_lockers removes its row once its session is gone.';

REVOKE ALL ON FUNCTION conveyor.prune_lockers() FROM PUBLIC;
REVOKE ALL ON FUNCTION conveyor.register_locker(text[], integer[], text, integer, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION conveyor.unregister_locker() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION conveyor.prune_lockers() TO conveyor_worker;
GRANT EXECUTE ON FUNCTION conveyor.register_locker(text[], integer[], text, integer, boolean) TO conveyor_worker;
GRANT EXECUTE ON FUNCTION conveyor.unregister_locker() TO conveyor_worker;

-- The trigger function names the table in its body: recreated on the new name.
CREATE OR REPLACE FUNCTION conveyor.tg_jobs__notify()
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
  IF NOT EXISTS (SELECT FROM conveyor.lockers WHERE listening) THEN
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
        JOIN conveyor.lockers AS w
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
  'workers (their lockers in conveyor.lockers) about the ready jobs it inserted, on channel '
  'conveyor_worker_<pid>, with payload {"jobs": [{"id", "queue", "priority", "run_at"}], "more": bool}. '
  'At most 64 jobs are announced, one notification is sent per worker per statement, and a '
  'payload stays under 8,000 bytes ("more" is true when jobs were left out). '
  'Jobs with a future run_at are not announced. SET LOCAL conveyor.notify = off silences it.';

COMMIT;
