-- Revert conveyor:limit_slot_notify from pg

BEGIN;

DROP TRIGGER _300_free_limit_slot ON conveyor.jobs;
DROP FUNCTION conveyor.tg_jobs__free_limit_slot();

COMMIT;
