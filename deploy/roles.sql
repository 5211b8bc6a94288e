-- Deploy conveyor:roles to pg
-- requires: roles@v0.1.0

BEGIN;

-- Roles are global to the cluster, while the schema is per database: a cluster
-- with several conveyor databases (or a re-deploy) finds them already there.
-- Creating a role, commenting on one and granting one role to another need
-- CREATEROLE; the schema's owner needs none of it when a superuser created the
-- roles beforehand (docs/security.md), so each step runs only when it is missing.
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'conveyor_enqueuer') THEN
    CREATE ROLE conveyor_enqueuer NOLOGIN;
    COMMENT ON ROLE conveyor_enqueuer IS
      'May enqueue conveyor jobs (conveyor.enqueue, conveyor.enqueue_many) and nothing else.';
  END IF;
  IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'conveyor_worker') THEN
    CREATE ROLE conveyor_worker NOLOGIN;
    COMMENT ON ROLE conveyor_worker IS
      'May lock, resolve, retry and unlock conveyor jobs, register workers and read stats; '
      'also an enqueuer, since jobs enqueue jobs.';
  END IF;
  IF NOT pg_catalog.pg_has_role('conveyor_worker', 'conveyor_enqueuer', 'member') THEN
    GRANT conveyor_enqueuer TO conveyor_worker;
  END IF;
EXCEPTION WHEN insufficient_privilege THEN
  RAISE EXCEPTION USING
    ERRCODE = 'insufficient_privilege',
    MESSAGE = 'the roles conveyor_enqueuer and conveyor_worker are missing (or not '
              'related) and ' || current_user || ' may not create them: ' || SQLERRM,
    HINT = 'Have a superuser create them once per cluster (docs/security.md), '
           'then install again.';
END
$$;

GRANT USAGE ON SCHEMA conveyor TO conveyor_enqueuer, conveyor_worker;

COMMIT;
