-- Deploy conveyor:limit_slot_notify to pg
-- requires: throttles

BEGIN;

-- A job held back by its key's perform_limit is ready and unannounced: no
-- insert will mention it again, so its workers would find it at their next
-- poll (5 s by default). When a job of a limited key is resolved or retried,
-- its lock is released in the same call (destroy_jobs, finish_jobs,
-- expire_jobs, retry_job) and a slot is free at commit: tell the listening
-- workers of its queue then, as resume does, so that they poll at once.
-- Row-level with a WHEN on the key, as the batch triggers: a job without a
-- concurrency_key costs one NULL test, no call.
CREATE FUNCTION conveyor.tg_jobs__free_limit_slot()
RETURNS trigger
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_pid integer;
BEGIN
  IF conveyor.flow_in_use()
     AND (conveyor.concurrency_limit_for(OLD.concurrency_key)).perform_limit IS NOT NULL THEN
    -- Identical notifications of one transaction are sent once: a batch of
    -- resolutions makes one per worker.
    FOR v_pid IN SELECT l.pid FROM conveyor.lockers AS l WHERE l.listening AND OLD.queue = ANY (l.queues) LOOP
      PERFORM pg_catalog.pg_notify('conveyor_worker_' || v_pid, '{"jobs": [], "more": true}');
    END LOOP;
  END IF;
  RETURN NULL;
END
$$;

COMMENT ON FUNCTION conveyor.tg_jobs__free_limit_slot() IS
  'Trigger function (_300_free_limit_slot: after an unresolved job with a concurrency_key is '
  'finished, expired, retried or rescheduled (run_at), or deleted): when its key has a '
  'perform_limit, notifies every listening locker that serves the job''s queue with {"jobs": '
  '[], "more": true} at commit, so that the jobs its limit held back are locked at once. '
  'SECURITY DEFINER: job code resolving its job needs no privilege on conveyor.lockers.';

CREATE TRIGGER _300_free_limit_slot
AFTER UPDATE OF finished_at, expired_at, run_at OR DELETE ON conveyor.jobs
FOR EACH ROW
WHEN (OLD.concurrency_key IS NOT NULL AND OLD.finished_at IS NULL AND OLD.expired_at IS NULL)
EXECUTE FUNCTION conveyor.tg_jobs__free_limit_slot();

COMMENT ON TRIGGER _300_free_limit_slot ON conveyor.jobs IS
  'Wakes the listening lockers of the queue when a job of a key with a perform_limit frees its slot.';

REVOKE ALL ON FUNCTION conveyor.tg_jobs__free_limit_slot() FROM PUBLIC;

COMMIT;
