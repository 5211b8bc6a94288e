-- Revert conveyor:roles from pg

BEGIN;

REVOKE USAGE ON SCHEMA conveyor FROM conveyor_enqueuer, conveyor_worker;

-- Another database of this cluster may still use the roles; then they stay.
DO $$
BEGIN
  DROP ROLE conveyor_worker;
  DROP ROLE conveyor_enqueuer;
EXCEPTION WHEN dependent_objects_still_exist THEN
  RAISE NOTICE 'conveyor roles are still used elsewhere in this cluster; kept';
END
$$;

COMMIT;
