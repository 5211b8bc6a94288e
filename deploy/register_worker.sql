-- Deploy conveyor:register_worker to pg
-- requires: workers

BEGIN;

CREATE FUNCTION conveyor.prune_workers()
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
  DELETE FROM conveyor.workers AS w
   WHERE w.postmaster_start <> pg_catalog.pg_postmaster_start_time()
      OR NOT EXISTS (SELECT FROM pg_catalog.pg_stat_activity AS a WHERE a.pid = w.pid)
      OR EXISTS (SELECT FROM pg_catalog.pg_stat_activity AS a
                  WHERE a.pid = w.pid AND a.backend_start IS DISTINCT FROM w.backend_start
                    AND a.backend_start IS NOT NULL AND w.backend_start IS NOT NULL);
  GET DIAGNOSTICS v_pruned = ROW_COUNT;
  RETURN v_pruned;
END
$$;

COMMENT ON FUNCTION conveyor.prune_workers() IS
  'Deletes registry rows whose session is gone (ended, or from before a server restart) and '
  'returns how many. register_worker calls it; a worker may call it when it polls.';

CREATE FUNCTION conveyor.register_worker(
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
  IF register_worker.queues IS NULL OR cardinality(register_worker.queues) = 0
     OR array_position(register_worker.queues, NULL) IS NOT NULL THEN
    RAISE EXCEPTION 'conveyor.register_worker: queues must name at least one queue, without NULLs'
      USING ERRCODE = '22023';
  ELSIF register_worker.worker_priorities IS NULL OR cardinality(register_worker.worker_priorities) = 0 THEN
    RAISE EXCEPTION 'conveyor.register_worker: worker_priorities must have one entry per worker (NULL = any priority)'
      USING ERRCODE = '22023';
  END IF;

  PERFORM conveyor.prune_workers();

  INSERT INTO conveyor.workers AS w
         (pid, backend_start, hostname, process_id, queues, worker_priorities, max_priority, listening)
  VALUES (pg_catalog.pg_backend_pid(),
          (SELECT a.backend_start FROM pg_catalog.pg_stat_activity AS a WHERE a.pid = pg_catalog.pg_backend_pid()),
          register_worker.hostname, register_worker.process_id, register_worker.queues,
          register_worker.worker_priorities,
          CASE WHEN array_position(register_worker.worker_priorities, NULL) IS NULL
               THEN (SELECT max(p) FROM unnest(register_worker.worker_priorities) AS p) END,
          register_worker.listening)
  ON CONFLICT (pid) DO UPDATE
     SET backend_start = excluded.backend_start, postmaster_start = excluded.postmaster_start,
         hostname = excluded.hostname, process_id = excluded.process_id, queues = excluded.queues,
         worker_priorities = excluded.worker_priorities, max_priority = excluded.max_priority,
         listening = excluded.listening, started_at = now();

  RETURN 'conveyor_worker_' || pg_catalog.pg_backend_pid();
END
$$;

COMMENT ON FUNCTION conveyor.register_worker(text[], integer[], text, integer, boolean) IS
  'Registers the calling session as a worker''s locker: the queues it serves and one priority '
  'ceiling per worker thread (NULL = any priority), for the NOTIFY trigger to choose whom to '
  'tell about new jobs; hostname and process_id are for operators. Replaces this session''s '
  'earlier registration, prunes stale rows, and returns the channel to LISTEN on '
  '(conveyor_worker_<backend pid>). Errors: 22023 no queues, a NULL queue, no workers.';

CREATE FUNCTION conveyor.unregister_worker()
RETURNS boolean
LANGUAGE sql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
  WITH gone AS (DELETE FROM conveyor.workers WHERE pid = pg_catalog.pg_backend_pid() RETURNING pid)
  SELECT EXISTS (SELECT FROM gone);
$$;

COMMENT ON FUNCTION conveyor.unregister_worker() IS
  'Removes the calling session''s registration; true when there was one. A worker that dies '
  'needs no call: prune_workers removes its row once its session is gone.';

REVOKE ALL ON FUNCTION conveyor.prune_workers() FROM PUBLIC;
REVOKE ALL ON FUNCTION conveyor.register_worker(text[], integer[], text, integer, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION conveyor.unregister_worker() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION conveyor.prune_workers() TO conveyor_worker;
GRANT EXECUTE ON FUNCTION conveyor.register_worker(text[], integer[], text, integer, boolean) TO conveyor_worker;
GRANT EXECUTE ON FUNCTION conveyor.unregister_worker() TO conveyor_worker;

COMMIT;
