-- Verify conveyor:job_locks on pg

BEGIN;

DO $$
BEGIN
  ASSERT pg_catalog.has_function_privilege('conveyor_worker', 'conveyor.held_job_ids()', 'execute');
  ASSERT pg_catalog.has_function_privilege('conveyor_worker', 'conveyor.working_job_ids()', 'execute');
  ASSERT pg_catalog.has_function_privilege('conveyor_worker', 'conveyor.release_job_locks(bigint[], bigint[])', 'execute');
  ASSERT NOT pg_catalog.has_function_privilege('conveyor_enqueuer', 'conveyor.release_job_locks(bigint[], bigint[])', 'execute');
  -- The key helpers round-trip, at the edges of both halves.
  ASSERT conveyor.job_lock_key1(1) = 1129270870 AND conveyor.job_lock_key2(1) = 1;
  ASSERT (SELECT bool_and(conveyor.job_lock_id((conveyor.job_lock_key1(i)::bigint & 4294967295)::oid,
                                               (conveyor.job_lock_key2(i)::bigint & 4294967295)::oid) = i)
            FROM unnest(ARRAY[1, 2147483647, 2147483648, 4294967295, 4294967296, 72057594037927935]::bigint[]) AS i);
  ASSERT conveyor.job_lock_id(0, 1) IS NULL;  -- not a job's lock
  ASSERT conveyor.sorted_array_contains('{1,5,9}', 5) AND NOT conveyor.sorted_array_contains('{1,5,9}', 4)
     AND NOT conveyor.sorted_array_contains('{1,5,9}', 0) AND NOT conveyor.sorted_array_contains('{}', 1);
  -- The rework: a failed release gives the locks back.
  ASSERT (SELECT p.prosrc FROM pg_catalog.pg_proc AS p WHERE p.oid = 'conveyor.release_job_locks(bigint[], bigint[])'::regprocedure) LIKE '%query_canceled%';
END
$$;

ROLLBACK;
