-- Deploy conveyor:job_locks to pg
-- requires: job_locks@v0.1.0

BEGIN;

-- The released objects of this change, unchanged (CREATE OR REPLACE), so
-- that this script alone installs the whole change; the reworked ones follow.

-- A job's advisory lock uses the two-key form, so conveyor's locks never meet
-- the single-bigint locks most applications (and Que) take:
--   key1 = 1129270870 (0x434F4E56, 'CONV') # (id >> 32),  key2 = low 32 bits of id.
-- In pg_locks that is classid = key1, objid = key2 (as unsigned), objsubid = 2.
-- job_lock_key1/job_lock_key2 encode it and job_lock_id decodes it: the only
-- place the constant is written. They are SQL functions with a body bound at
-- creation (RETURN ...), IMMUTABLE and without SET clauses, so the planner
-- inlines them into the calling query: they cost what the arithmetic written
-- out costs. A SET search_path would forbid that inlining; it is not needed,
-- as the body's operators were resolved when the function was created.

CREATE OR REPLACE FUNCTION conveyor.job_lock_key1(id bigint)
RETURNS integer
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
RETURN (job_lock_key1.id >> 32)::integer # 1129270870;

COMMENT ON FUNCTION conveyor.job_lock_key1(bigint) IS
  'Internal. The first key of a job''s advisory lock: 1129270870 (''CONV'') XOR the id''s high '
  '32 bits. Inlined by the planner. Locks nothing.';

CREATE OR REPLACE FUNCTION conveyor.job_lock_key2(id bigint)
RETURNS integer
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
RETURN job_lock_key2.id::bit(32)::integer;

COMMENT ON FUNCTION conveyor.job_lock_key2(bigint) IS
  'Internal. The second key of a job''s advisory lock: the id''s low 32 bits (as a signed '
  'integer). Inlined by the planner. Locks nothing.';

CREATE OR REPLACE FUNCTION conveyor.job_lock_id(classid oid, objid oid)
RETURNS bigint
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
-- A first key whose decoded high bits reach 2^24 is not a job's (ids stay
-- below 2^56): some other two-key advisory lock.
RETURN CASE WHEN (job_lock_id.classid::bigint # 1129270870) < 16777216
            THEN ((job_lock_id.classid::bigint # 1129270870) << 32) | job_lock_id.objid::bigint
       END;

COMMENT ON FUNCTION conveyor.job_lock_id(oid, oid) IS
  'Internal. The job id of a two-key advisory lock as pg_locks shows it (classid, objid), or '
  'NULL when the lock is not a job''s. The inverse of job_lock_key1/job_lock_key2. Inlined by '
  'the planner. Locks nothing.';

CREATE OR REPLACE FUNCTION conveyor.sorted_array_contains(sorted bigint[], x bigint)
RETURNS boolean
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
-- A binary search: width_bucket(x, sorted) is the position of the last
-- element <= x (0 when there is none), so x is in the array exactly when that
-- element equals x. Needs sorted ascending, without NULLs.
RETURN coalesce(sorted_array_contains.sorted[width_bucket(sorted_array_contains.x, sorted_array_contains.sorted)]
                = sorted_array_contains.x, false);

COMMENT ON FUNCTION conveyor.sorted_array_contains(bigint[], bigint) IS
  'Internal. Whether x is an element of sorted, an array sorted ascending without NULLs, by '
  'binary search (width_bucket) rather than a scan: false for NULL x. Inlined by the planner. '
  'Used by lock_jobs and release_job_locks to test ids against the jobs a session holds.';

-- PL/pgSQL, not SQL: a SQL function that cannot be inlined (it has SET
-- clauses) is planned again on every call, which costs several hundred
-- microseconds here; PL/pgSQL keeps its plans for the session.
CREATE OR REPLACE FUNCTION conveyor.held_job_ids()
RETURNS bigint[]
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  RETURN (
    SELECT coalesce(array_agg(conveyor.job_lock_id(l.classid, l.objid)), '{}')
      FROM pg_catalog.pg_locks AS l
     WHERE l.locktype = 'advisory'
       AND l.objsubid = 2
       AND l.pid = pg_catalog.pg_backend_pid()
       AND l.granted
       AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d
                          WHERE d.datname = pg_catalog.current_database())
       AND conveyor.job_lock_id(l.classid, l.objid) IS NOT NULL);
END
$$;

COMMENT ON FUNCTION conveyor.held_job_ids() IS
  'Internal. The ids of the jobs whose advisory locks the calling session holds, from pg_locks. '
  'lock_jobs skips them (a session-level advisory lock is re-entrant, so locking a held job '
  'again would need two unlocks), and the release functions use them to touch only the '
  'caller''s own locks. Locks nothing.';

CREATE OR REPLACE FUNCTION conveyor.working_job_ids()
RETURNS SETOF bigint
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT conveyor.job_lock_id(l.classid, l.objid)
    FROM pg_catalog.pg_locks AS l
   WHERE l.locktype = 'advisory'
     AND l.objsubid = 2
     AND l.granted
     AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d
                        WHERE d.datname = pg_catalog.current_database())
     AND conveyor.job_lock_id(l.classid, l.objid) IS NOT NULL;
$$;

COMMENT ON FUNCTION conveyor.working_job_ids() IS
  'Internal. The ids of all jobs some session of this database holds the advisory lock of '
  '(the jobs being worked), from pg_locks. Used by job_stats and queue_stats. Locks nothing.';

-- Reworked after v0.1.0: a release that fails part-way (a
-- cancel, statement_timeout) left the session without some of the locks it
-- had released while the caller's resolution was rolled back, so those jobs
-- could run again on another session while this one still counted them. Now
-- the locks are released inside a block that, on any error, takes back those
-- it released before re-raising: the session holds what it held before.
CREATE OR REPLACE FUNCTION conveyor.release_job_locks(ids bigint[], held bigint[] DEFAULT NULL)
RETURNS SETOF bigint
LANGUAGE plpgsql  -- not SQL: see held_job_ids
VOLATILE
SET search_path = pg_catalog, pg_temp
SET client_min_messages = error
AS $$
DECLARE
  -- Sorted, for a binary search (sorted_array_contains) per id instead of a
  -- scan of the whole list: ids times held comparisons cost half a
  -- millisecond for a 341-job batch.
  v_held bigint[] := ARRAY(SELECT h FROM unnest(coalesce(release_job_locks.held, conveyor.held_job_ids())) AS h
                            WHERE h IS NOT NULL ORDER BY 1);
  v_mine bigint[] := '{}';
  v_job bigint;
  v_released bigint[] := '{}';
BEGIN
  -- Only locks the session holds are touched: the ids it claims to hold when
  -- the caller keeps count (the locker does), else those pg_locks lists. The
  -- transaction-level lock is only tried, so a wrong claim about a job another
  -- session holds skips that job instead of waiting for it. Each job taken
  -- here stays locked by this transaction until it ends, whatever happens
  -- below. Loops of simple expressions (no query, evaluated without the
  -- executor) cost less than the queries they replace for the batches a
  -- worker sends.
  FOREACH v_job IN ARRAY coalesce(release_job_locks.ids, '{}') LOOP
    IF conveyor.sorted_array_contains(v_held, v_job)
       AND pg_catalog.pg_try_advisory_xact_lock(conveyor.job_lock_key1(v_job), conveyor.job_lock_key2(v_job)) THEN
      v_mine := array_append(v_mine, v_job);
    END IF;
  END LOOP;

  -- The session locks are released one by one, each release and its record
  -- in v_released one statement (interrupts are taken between statements),
  -- so that when anything fails the handler knows exactly which to take
  -- back. A job listed twice is released once: the second unlock is false.
  BEGIN
    FOREACH v_job IN ARRAY v_mine LOOP
      v_released := array_append(v_released,
                                 CASE WHEN pg_catalog.pg_advisory_unlock(conveyor.job_lock_key1(v_job), conveyor.job_lock_key2(v_job))
                                      THEN v_job END);
    END LOOP;
  EXCEPTION WHEN query_canceled OR OTHERS THEN  -- OTHERS does not catch query_canceled
    -- Take back what this call released. No other session can have taken
    -- one of them in between: this transaction's lock keeps them out.
    PERFORM pg_catalog.pg_advisory_lock(conveyor.job_lock_key1(r), conveyor.job_lock_key2(r))
       FROM unnest(v_released) AS r
      WHERE r IS NOT NULL;
    RAISE;
  END;

  FOREACH v_job IN ARRAY v_released LOOP
    IF v_job IS NOT NULL THEN
      RETURN NEXT v_job;
    END IF;
  END LOOP;
END
$$;

COMMENT ON FUNCTION conveyor.release_job_locks(bigint[], bigint[]) IS
  'Internal. Releases the calling session''s advisory locks on the given jobs and returns the '
  'ids it released; ids the session does not hold are ignored without a warning. The job stays '
  'locked by a transaction-level lock until the calling transaction ends, so a resolution in '
  'the same transaction commits before another session can lock the job. held, when not NULL, '
  'lists the jobs the caller knows its session holds and saves the pg_locks read (see '
  'held_job_ids); only ids in both lists are released. When the release fails (a cancel, '
  'statement_timeout, any error) it takes back the locks it released before raising the error '
  'again: the session holds what it held before the call.';

REVOKE ALL ON FUNCTION conveyor.job_lock_key1(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION conveyor.job_lock_key2(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION conveyor.job_lock_id(oid, oid) FROM PUBLIC;
REVOKE ALL ON FUNCTION conveyor.sorted_array_contains(bigint[], bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION conveyor.held_job_ids() FROM PUBLIC;
REVOKE ALL ON FUNCTION conveyor.working_job_ids() FROM PUBLIC;
REVOKE ALL ON FUNCTION conveyor.release_job_locks(bigint[], bigint[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION conveyor.job_lock_key1(bigint) TO conveyor_worker;
GRANT EXECUTE ON FUNCTION conveyor.job_lock_key2(bigint) TO conveyor_worker;
GRANT EXECUTE ON FUNCTION conveyor.job_lock_id(oid, oid) TO conveyor_worker;
GRANT EXECUTE ON FUNCTION conveyor.sorted_array_contains(bigint[], bigint) TO conveyor_worker;
GRANT EXECUTE ON FUNCTION conveyor.held_job_ids() TO conveyor_worker;
GRANT EXECUTE ON FUNCTION conveyor.working_job_ids() TO conveyor_worker;
GRANT EXECUTE ON FUNCTION conveyor.release_job_locks(bigint[], bigint[]) TO conveyor_worker;

COMMIT;
