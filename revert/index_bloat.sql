-- Revert conveyor:index_bloat from pg

BEGIN;

DROP FUNCTION conveyor.index_bloat(bigint, double precision);

COMMIT;
