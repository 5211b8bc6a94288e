-- Deploy conveyor:roles to pg
-- requires: schema

BEGIN;

-- Roles are global to the cluster, while the schema is per database: a cluster
-- with several conveyor databases (or a re-deploy) finds them already there.
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'conveyor_enqueuer') THEN
    CREATE ROLE conveyor_enqueuer NOLOGIN;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'conveyor_worker') THEN
    CREATE ROLE conveyor_worker NOLOGIN;
  END IF;
END
$$;

COMMENT ON ROLE conveyor_enqueuer IS
  'May enqueue conveyor jobs (conveyor.enqueue, conveyor.enqueue_many) and nothing else.';
COMMENT ON ROLE conveyor_worker IS
  'May lock, resolve, retry and unlock conveyor jobs, register workers and read stats; '
  'also an enqueuer, since jobs enqueue jobs.';

DO $$
BEGIN
  IF NOT pg_catalog.pg_has_role('conveyor_worker', 'conveyor_enqueuer', 'member') THEN
    GRANT conveyor_enqueuer TO conveyor_worker;
  END IF;
END
$$;
GRANT USAGE ON SCHEMA conveyor TO conveyor_enqueuer, conveyor_worker;

COMMIT;
