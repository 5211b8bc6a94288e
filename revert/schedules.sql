-- Revert conveyor:schedules from pg

BEGIN;

DROP FUNCTION conveyor.next_schedule_at();
DROP FUNCTION conveyor.enqueue_due_schedules();
DROP FUNCTION conveyor.enqueue_schedules_due_at(timestamptz);
DROP FUNCTION conveyor.delete_schedule(text);
DROP FUNCTION conveyor.set_schedule_enabled(text, boolean);
DROP FUNCTION conveyor.set_schedule(text, text, text, jsonb, text, integer, jsonb, text, boolean, boolean);
DROP TABLE conveyor.schedules;

COMMIT;
