-- Verify conveyor:workers on pg

BEGIN;

SELECT pid, backend_start, postmaster_start, hostname, process_id, queues,
       worker_priorities, max_priority, listening, started_at
  FROM conveyor.workers
 WHERE false;

ROLLBACK;
