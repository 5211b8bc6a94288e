-- Deploy conveyor:index_bloat to pg
-- requires: locker_buffer
-- requires: job_history

BEGIN;

-- After a burst drains, conveyor.jobs shrinks back (vacuum frees its pages
-- for reuse and truncates the empty tail) but its B-tree indexes do not: a
-- B-tree reuses its empty pages, never gives them back, so the indexes stay
-- at the burst's high-water mark (docs/performance.md "Soak"). Only REINDEX
-- returns the space, and REINDEX CONCURRENTLY cannot run inside a function
-- (nor in any transaction block), so the schema's part is to say which
-- indexes need it; the worker (or a cron job in any language) runs the
-- REINDEX. This function reads catalogs and, for each candidate, counts a
-- bounded number of rows: it is cheap enough to call every few minutes.

CREATE FUNCTION conveyor.index_bloat(
  minimum_size bigint DEFAULT 4194304,
  factor double precision DEFAULT 4
)
RETURNS TABLE (
  index_name text,
  table_name text,
  size_bytes bigint,
  live_entries bigint,
  needed_bytes bigint,
  invalid boolean
)
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  -- A generous width per index entry (a real one is 20-45 bytes with its
  -- line pointer): "needed" errs large, so an index is called bloated only
  -- when it is far larger than its entries could make it.
  entry_bytes constant integer := 64;
  page_bytes constant bigint := current_setting('block_size')::bigint;
  candidate record;
  cap bigint;
  counted bigint;
BEGIN
  IF minimum_size IS NULL OR minimum_size < 0 THEN
    RAISE EXCEPTION 'conveyor.index_bloat: minimum_size must be a number of bytes >= 0, not %', coalesce(minimum_size::text, 'NULL')
      USING ERRCODE = '22023';
  END IF;
  IF factor IS NULL OR factor < 1 OR factor IN ('Infinity', 'NaN') THEN
    RAISE EXCEPTION 'conveyor.index_bloat: factor must be a finite number >= 1, not %', coalesce(factor::text, 'NULL')
      USING ERRCODE = '22023';
  END IF;

  -- Leftovers of an interrupted REINDEX CONCURRENTLY: invalid indexes named
  -- <index>_ccnew or <index>_ccold (with a number when taken). They cost
  -- every write to the table and serve no read. One that another session is
  -- still building is not a leftover: that session holds a SHARE UPDATE
  -- EXCLUSIVE lock on the table (so does autovacuum: then wait for the next
  -- call rather than guess).
  RETURN QUERY
    SELECT i.relname::text, t.relname::text, pg_relation_size(i.oid), NULL::bigint, 0::bigint, true
      FROM pg_index AS x
      JOIN pg_class AS i ON i.oid = x.indexrelid
      JOIN pg_class AS t ON t.oid = x.indrelid
     WHERE i.relnamespace = 'conveyor'::regnamespace
       AND NOT x.indisvalid
       AND i.relname ~ '_cc(new|old)[0-9]*$'
       AND NOT EXISTS (
             SELECT FROM pg_locks AS l
              WHERE l.locktype = 'relation' AND l.relation = t.oid AND l.granted
                AND l.mode = 'ShareUpdateExclusiveLock' AND l.pid <> pg_backend_pid())
     ORDER BY 1;

  -- Valid B-tree indexes larger than minimum_size and than factor times what
  -- their entries need. The catalog's entry count (reltuples, as of the last
  -- vacuum or analyze) picks the candidates; a stale one can only err both
  -- ways, so each candidate's live entries are counted, up to the count
  -- that would make it not bloated (a bounded scan).
  FOR candidate IN
    SELECT i.relname::text AS index_name, t.relname::text AS table_name,
           pg_relation_size(i.oid) AS size_bytes, pg_get_expr(x.indpred, x.indrelid) AS predicate
      FROM pg_index AS x
      JOIN pg_class AS i ON i.oid = x.indexrelid
      JOIN pg_class AS t ON t.oid = x.indrelid
      JOIN pg_am AS am ON am.oid = i.relam
     WHERE i.relnamespace = 'conveyor'::regnamespace
       AND am.amname = 'btree'
       AND x.indisvalid AND x.indisready
       AND has_table_privilege(t.oid, 'SELECT')
       AND pg_relation_size(i.oid) > minimum_size
       AND pg_relation_size(i.oid) > factor * page_bytes * (2 + ceil(greatest(i.reltuples, 0) * entry_bytes / page_bytes))
     ORDER BY 1
  LOOP
    -- The most live entries a bloated index of this size can have.
    cap := ceil(candidate.size_bytes / factor / entry_bytes)::bigint;
    -- The one piece of SQL text not quoted here is the index's own
    -- predicate, from the catalog (pg_get_expr of an index on a conveyor
    -- table: only the schema's owner can have written it); never input.
    EXECUTE format('SELECT count(*) FROM (SELECT FROM %I.%I WHERE %s LIMIT $1) AS s',
                   'conveyor', candidate.table_name, coalesce(candidate.predicate, 'true'))
      INTO counted
      USING cap + 1;
    needed_bytes := page_bytes * (2 + ceil(counted::numeric * entry_bytes / page_bytes))::bigint;
    IF candidate.size_bytes > factor * needed_bytes THEN
      index_name := candidate.index_name;
      table_name := candidate.table_name;
      size_bytes := candidate.size_bytes;
      live_entries := counted;
      invalid := false;
      RETURN NEXT;
    END IF;
  END LOOP;
END;
$$;

COMMENT ON FUNCTION conveyor.index_bloat(bigint, double precision) IS
  'The conveyor indexes to rebuild: valid B-tree indexes larger than minimum_size bytes (default '
  '4 MB) and than factor (default 4) times what their live entries need (needed_bytes, at a '
  'generous 64 bytes an entry), with invalid = false: run REINDEX INDEX CONCURRENTLY on each; '
  'and invalid leftovers of an interrupted REINDEX CONCURRENTLY (*_ccnew, *_ccold) that no '
  'session is building, with invalid = true: run DROP INDEX CONCURRENTLY on each. Only indexes of '
  'tables the caller may SELECT. Reads catalogs and counts at most a bounded number of rows per '
  'candidate; changes nothing. The worker''s index upkeep (--reindex-interval) calls it; so can '
  'cron: SELECT format(''REINDEX INDEX CONCURRENTLY conveyor.%I'', index_name) FROM '
  'conveyor.index_bloat() WHERE NOT invalid \gexec in psql. 22023 for a negative minimum_size '
  'or a factor below 1.';

REVOKE ALL ON FUNCTION conveyor.index_bloat(bigint, double precision) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION conveyor.index_bloat(bigint, double precision) TO conveyor_worker, conveyor_admin;

COMMIT;
