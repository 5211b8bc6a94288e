-- Deploy conveyor:schema to pg

BEGIN;

CREATE SCHEMA conveyor;

COMMENT ON SCHEMA conveyor IS
  'conveyor: a PostgreSQL job queue whose contract is SQL. Jobs live in conveyor.jobs; '
  'every step of a job''s life is a function here. See docs/reference/protocol.md.';

-- Nobody but the owner and the roles granted in the roles change may use it.
REVOKE ALL ON SCHEMA conveyor FROM PUBLIC;

COMMIT;
