-- Deploy conveyor:workers to pg
-- requires: schema
-- requires: roles

BEGIN;

CREATE TABLE conveyor.workers (
  pid                integer     PRIMARY KEY,
  backend_start      timestamptz,
  postmaster_start   timestamptz NOT NULL DEFAULT pg_catalog.pg_postmaster_start_time(),
  hostname           text,
  process_id         integer,
  queues             text[]      NOT NULL,
  worker_priorities  integer[]   NOT NULL,
  max_priority       integer,
  listening          boolean     NOT NULL DEFAULT true,
  started_at         timestamptz NOT NULL DEFAULT now(),

  CONSTRAINT workers_queues_not_empty CHECK (cardinality(queues) > 0),
  CONSTRAINT workers_has_workers CHECK (cardinality(worker_priorities) > 0)
);

COMMENT ON TABLE conveyor.workers IS
  'The registry of live worker processes (Que''s que_lockers): one row per locker session, '
  'written by register_worker and read by the NOTIFY trigger to choose whom to tell about a job.';
COMMENT ON COLUMN conveyor.workers.pid IS 'Backend pid of the locker''s session; its channel is conveyor_worker_<pid>.';
COMMENT ON COLUMN conveyor.workers.backend_start IS 'When that session started, to tell a reused pid from the registered one.';
COMMENT ON COLUMN conveyor.workers.postmaster_start IS 'Server start time at registration: rows from before a restart are stale.';
COMMENT ON COLUMN conveyor.workers.process_id IS 'The worker''s operating-system pid, for operators.';
COMMENT ON COLUMN conveyor.workers.worker_priorities IS 'One entry per worker thread: its priority ceiling, NULL for any priority.';
COMMENT ON COLUMN conveyor.workers.max_priority IS 'The highest priority number any of its workers takes; NULL when one takes any.';
COMMENT ON COLUMN conveyor.workers.listening IS 'Whether the locker LISTENs on its channel, so the trigger may target it.';

REVOKE ALL ON conveyor.workers FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON conveyor.workers TO conveyor_worker;

COMMIT;
