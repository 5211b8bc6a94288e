-- Deploy conveyor:job_locks to pg
-- requires: jobs

BEGIN;

-- A job's advisory lock uses the two-key form, so conveyor's locks never meet
-- the single-bigint locks most applications (and Que) take:
--   key1 = 1129270870 (0x434F4E56, 'CONV') # (id >> 32),  key2 = low 32 bits of id.
-- In pg_locks that is classid = key1, objid = key2 (as unsigned), objsubid = 2.

-- PL/pgSQL, not SQL: a SQL function that cannot be inlined (it has SET
-- clauses) is planned again on every call, which costs several hundred
-- microseconds here; PL/pgSQL keeps its plans for the session.
CREATE FUNCTION conveyor.held_job_ids()
RETURNS bigint[]
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  RETURN (
    SELECT coalesce(array_agg(((l.classid::bigint # 1129270870) << 32) | l.objid::bigint), '{}')
      FROM pg_catalog.pg_locks AS l
     WHERE l.locktype = 'advisory'
       AND l.objsubid = 2
       AND l.pid = pg_catalog.pg_backend_pid()
       AND l.granted
       AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d
                          WHERE d.datname = pg_catalog.current_database())
       AND (l.classid::bigint # 1129270870) < 16777216);  -- ids below 2^56
END
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

CREATE FUNCTION conveyor.release_job_locks(ids bigint[], held bigint[] DEFAULT NULL)
RETURNS SETOF bigint
LANGUAGE plpgsql  -- not SQL: see held_job_ids
VOLATILE
SET search_path = pg_catalog, pg_temp
SET client_min_messages = error
AS $$
DECLARE
  -- Sorted, for a binary search (width_bucket) per id instead of a scan of
  -- the whole list: ids times held comparisons cost half a millisecond for a
  -- 341-job batch.
  v_held bigint[] := ARRAY(SELECT h FROM unnest(coalesce(release_job_locks.held, conveyor.held_job_ids())) AS h
                            WHERE h IS NOT NULL ORDER BY 1);
BEGIN
  -- Only locks the session holds are touched: the ids it claims to hold when
  -- the caller keeps count (the locker does), else those pg_locks lists. The
  -- transaction-level lock is only tried, so a wrong claim about a job another
  -- session holds skips that job instead of waiting for it; CASE keeps the try
  -- away from ids the session does not hold.
  RETURN QUERY
  SELECT mine.id
    FROM (SELECT i.id
            FROM (SELECT DISTINCT unnest(release_job_locks.ids) AS id) AS i
           WHERE CASE WHEN v_held[width_bucket(i.id, v_held)] = i.id
                      THEN pg_catalog.pg_try_advisory_xact_lock(((i.id >> 32)::integer # 1129270870), i.id::bit(32)::integer)
                      ELSE false
                 END
          OFFSET 0) AS mine
   WHERE pg_catalog.pg_advisory_unlock(((mine.id >> 32)::integer # 1129270870), mine.id::bit(32)::integer);
END
$$;

COMMENT ON FUNCTION conveyor.release_job_locks(bigint[], bigint[]) IS
  'Internal. Releases the calling session''s advisory locks on the given jobs and returns the '
  'ids it released; ids the session does not hold are ignored without a warning. The job stays '
  'locked by a transaction-level lock until the calling transaction ends, so a resolution in '
  'the same transaction commits before another session can lock the job. held, when not NULL, '
  'lists the jobs the caller knows its session holds and saves the pg_locks read (see '
  'held_job_ids); only ids in both lists are released.';

REVOKE ALL ON FUNCTION conveyor.held_job_ids() FROM PUBLIC;
REVOKE ALL ON FUNCTION conveyor.working_job_ids() FROM PUBLIC;
REVOKE ALL ON FUNCTION conveyor.release_job_locks(bigint[], bigint[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION conveyor.held_job_ids() TO conveyor_worker;
GRANT EXECUTE ON FUNCTION conveyor.working_job_ids() TO conveyor_worker;
GRANT EXECUTE ON FUNCTION conveyor.release_job_locks(bigint[], bigint[]) TO conveyor_worker;

COMMIT;
