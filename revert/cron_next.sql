-- Revert conveyor:cron_next from pg

BEGIN;

DROP FUNCTION conveyor.cron_next(text, timestamptz, text);
DROP FUNCTION conveyor.cron_parse(text);
DROP FUNCTION conveyor.cron_field(text, text, integer, integer, text[]);

COMMIT;
