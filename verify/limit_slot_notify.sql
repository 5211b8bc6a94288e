-- Verify conveyor:limit_slot_notify on pg

BEGIN;

DO $$
BEGIN
  ASSERT EXISTS (SELECT FROM pg_catalog.pg_trigger
                  WHERE tgrelid = 'conveyor.jobs'::regclass AND tgname = '_300_free_limit_slot' AND tgenabled = 'O'),
    'conveyor.jobs must have the enabled trigger _300_free_limit_slot';
  ASSERT (SELECT prosecdef FROM pg_catalog.pg_proc WHERE oid = 'conveyor.tg_jobs__free_limit_slot()'::regprocedure),
    'tg_jobs__free_limit_slot must be SECURITY DEFINER';
END
$$;

ROLLBACK;
