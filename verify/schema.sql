-- Verify conveyor:schema on pg

BEGIN;

SELECT pg_catalog.has_schema_privilege('conveyor', 'usage');

ROLLBACK;
