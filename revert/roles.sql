-- Revert conveyor:roles from pg

BEGIN;

-- The reworked deploy creates nothing the released one (roles@v0.1.0) does
-- not: it only skips the steps that are already done. Back at roles@v0.1.0
-- the database is as it is now; that entry's revert drops the roles.

COMMIT;
