-- Deploy conveyor:schema_changes to pg
-- requires: schema

BEGIN;

CREATE TABLE conveyor.schema_changes (
  change text NOT NULL,
  planned_at timestamptz NOT NULL,
  deployed_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
  PRIMARY KEY (change, planned_at)
);

COMMENT ON TABLE conveyor.schema_changes IS
  'The sqitch plan entries installed in this database by `conveyor migrate` or '
  'sql/conveyor.sql, one row per entry (a reworked change has one per version). '
  'A database deployed by sqitch keeps its record in sqitch.changes instead, and '
  'this table stays empty. No job role may read or change it.';
COMMENT ON COLUMN conveyor.schema_changes.change IS
  'The change''s name in sqitch.plan.';
COMMENT ON COLUMN conveyor.schema_changes.planned_at IS
  'The entry''s planned-at time in sqitch.plan: with the name, it tells a '
  'reworked change''s versions apart.';
COMMENT ON COLUMN conveyor.schema_changes.deployed_at IS
  'When the transaction that installed the entry began.';

REVOKE ALL ON conveyor.schema_changes FROM PUBLIC;

COMMIT;
