-- Revert conveyor:register_worker from pg

BEGIN;

DROP FUNCTION conveyor.unregister_worker();
DROP FUNCTION conveyor.register_worker(text[], integer[], text, integer, boolean);
DROP FUNCTION conveyor.prune_workers();

COMMIT;
