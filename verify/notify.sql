-- Verify conveyor:notify on pg

BEGIN;

DO $$
BEGIN
  ASSERT EXISTS (SELECT FROM pg_catalog.pg_trigger
                  WHERE tgrelid = 'conveyor.jobs'::regclass AND tgname = '_900_notify' AND tgenabled <> 'D'),
    'trigger _900_notify on conveyor.jobs is missing or disabled';
END
$$;

ROLLBACK;
