-- Verify conveyor:cron_next on pg

BEGIN;

DO $$
BEGIN
  ASSERT conveyor.cron_next('*/15 * * * *', '2026-01-01 00:07+00', 'UTC') = '2026-01-01 00:15+00',
    'conveyor.cron_next must find the next quarter hour';
  ASSERT conveyor.cron_next('30 2 * * *', '2026-10-25 00:00+00', 'Europe/Berlin') = '2026-10-25 00:30+00',
    'conveyor.cron_next must read the wall clock of the time zone';
  ASSERT pg_catalog.has_function_privilege('conveyor_worker',
    'conveyor.cron_next(text, timestamptz, text)', 'execute');
  ASSERT (SELECT provolatile FROM pg_catalog.pg_proc
           WHERE oid = 'conveyor.cron_next(text, timestamptz, text)'::regprocedure) = 'i',
    'conveyor.cron_next must be IMMUTABLE';
END
$$;

ROLLBACK;
