-- Revert conveyor:stats_by_label from pg

BEGIN;

DROP FUNCTION conveyor.queue_stats(text);
DROP FUNCTION conveyor.job_stats(text);

COMMIT;
