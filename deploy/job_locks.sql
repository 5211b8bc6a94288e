-- Deploy conveyor:job_locks to pg
-- requires: jobs

BEGIN;

-- A job's advisory lock uses the two-key form, so conveyor's locks never meet
-- the single-bigint locks most applications (and Que) take:
--   key1 = 1129270870 (0x434F4E56, 'CONV') # (id >> 32),  key2 = low 32 bits of id.
-- In pg_locks that is classid = key1, objid = key2 (as unsigned), objsubid = 2.

CREATE FUNCTION conveyor.held_job_ids()
RETURNS bigint[]
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT coalesce(array_agg(((l.classid::bigint # 1129270870) << 32) | l.objid::bigint), '{}')
    FROM pg_catalog.pg_locks AS l
   WHERE l.locktype = 'advisory'
     AND l.objsubid = 2
     AND l.pid = pg_catalog.pg_backend_pid()
     AND l.granted
     AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d
                        WHERE d.datname = pg_catalog.current_database())
     AND (l.classid::bigint # 1129270870) < 16777216;  -- ids below 2^56
$$;

COMMENT ON FUNCTION conveyor.held_job_ids() IS
  'Internal. The ids of the jobs whose advisory locks the calling session holds, from pg_locks. '
  'lock_jobs skips them (a session-level advisory lock is re-entrant, so locking a held job '
  'again would need two unlocks), and the release functions use them to touch only the '
  'caller''s own locks. Locks nothing.';

CREATE FUNCTION conveyor.working_job_ids()
RETURNS SETOF bigint
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT ((l.classid::bigint # 1129270870) << 32) | l.objid::bigint
    FROM pg_catalog.pg_locks AS l
   WHERE l.locktype = 'advisory'
     AND l.objsubid = 2
     AND l.granted
     AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d
                        WHERE d.datname = pg_catalog.current_database())
     AND (l.classid::bigint # 1129270870) < 16777216;  -- ids below 2^56
$$;

COMMENT ON FUNCTION conveyor.working_job_ids() IS
  'Internal. The ids of all jobs some session of this database holds the advisory lock of '
  '(the jobs being worked), from pg_locks. Used by job_stats and queue_stats. Locks nothing.';

CREATE FUNCTION conveyor.release_job_locks(ids bigint[])
RETURNS SETOF bigint
LANGUAGE sql
VOLATILE
SET search_path = pg_catalog, pg_temp
-- pg_locks shows one row for a lock held at session level, at transaction
-- level, or both. After a release in this transaction only the transaction-
-- level lock is left, still listed as held, and a second release in the same
-- transaction would make pg_advisory_unlock warn that the session does not
-- own the lock. It then returns false and the id is not reported, which is
-- the right answer; the warning is noise for the caller.
SET client_min_messages = error
AS $$
  -- For each job the caller holds, first take the transaction-level lock on
  -- the same key (inner query, evaluated row by row before the outer one;
  -- OFFSET 0 keeps the planner from merging the two), then drop the
  -- session-level lock. The job stays locked until this transaction ends, so
  -- no other session can lock it while a resolution made in this transaction
  -- is still uncommitted, and then work it a second time.
  SELECT held.id
    FROM (SELECT h.id, pg_catalog.pg_advisory_xact_lock(((h.id >> 32)::integer # 1129270870), h.id::bit(32)::integer)
            FROM (SELECT DISTINCT unnest(conveyor.held_job_ids()) AS id) AS h
           WHERE h.id = ANY (release_job_locks.ids)
          OFFSET 0) AS held
   WHERE pg_catalog.pg_advisory_unlock(((held.id >> 32)::integer # 1129270870), held.id::bit(32)::integer);
$$;

COMMENT ON FUNCTION conveyor.release_job_locks(bigint[]) IS
  'Internal. Releases the calling session''s advisory locks on the given jobs and returns the '
  'ids it released; ids the session does not hold are ignored without a warning. The job stays '
  'locked by a transaction-level lock until the calling transaction ends, so a resolution in '
  'the same transaction commits before another session can lock the job.';

REVOKE ALL ON FUNCTION conveyor.held_job_ids() FROM PUBLIC;
REVOKE ALL ON FUNCTION conveyor.working_job_ids() FROM PUBLIC;
REVOKE ALL ON FUNCTION conveyor.release_job_locks(bigint[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION conveyor.held_job_ids() TO conveyor_worker;
GRANT EXECUTE ON FUNCTION conveyor.working_job_ids() TO conveyor_worker;
GRANT EXECUTE ON FUNCTION conveyor.release_job_locks(bigint[]) TO conveyor_worker;

COMMIT;
