-- Revert conveyor:notify from pg

BEGIN;

DROP TRIGGER _900_notify ON conveyor.jobs;
DROP FUNCTION conveyor.tg_jobs__notify();

COMMIT;
