-- Revert conveyor:queue_stats from pg

BEGIN;

DROP FUNCTION conveyor.queue_stats();

COMMIT;
