-- Revert conveyor:locker_buffer from pg

BEGIN;

DROP FUNCTION conveyor.report_locker(integer, integer);
ALTER TABLE conveyor.lockers
  DROP CONSTRAINT lockers_buffer_not_negative,
  DROP COLUMN buffer_size,
  DROP COLUMN maximum_buffer_size,
  DROP COLUMN reported_at;

COMMIT;
