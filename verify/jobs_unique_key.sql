-- Verify conveyor:jobs_unique_key on pg

BEGIN;

SELECT unique_key FROM conveyor.jobs WHERE false;

DO $$
BEGIN
  ASSERT (SELECT indisunique FROM pg_catalog.pg_index
           WHERE indexrelid = 'conveyor.jobs_unique_key_idx'::regclass),
    'conveyor.jobs_unique_key_idx must be unique';
END
$$;

ROLLBACK;
