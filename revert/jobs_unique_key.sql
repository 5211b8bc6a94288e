-- Revert conveyor:jobs_unique_key from pg

BEGIN;

DROP INDEX conveyor.jobs_unique_key_idx;
ALTER TABLE conveyor.jobs DROP COLUMN unique_key;

COMMIT;
