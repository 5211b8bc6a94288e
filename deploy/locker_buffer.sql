-- Deploy conveyor:locker_buffer to pg
-- requires: lockers

BEGIN;

-- What each live worker holds in its buffer, for operators (the dashboard's
-- processes page, `conveyor top`): the locker reports its buffer's size and
-- maximum now and then -- at most every few seconds, and only when they
-- changed -- never per job. NULL until a locker has reported (a worker of an
-- earlier version, or another language's that does not report).

ALTER TABLE conveyor.lockers
  ADD COLUMN buffer_size integer,
  ADD COLUMN maximum_buffer_size integer,
  ADD COLUMN reported_at timestamptz,
  ADD CONSTRAINT lockers_buffer_not_negative CHECK (buffer_size >= 0 AND maximum_buffer_size >= 0);

COMMENT ON COLUMN conveyor.lockers.buffer_size IS
  'Locked jobs waiting in the worker''s buffer for a worker thread at its last report_locker (NULL: never reported).';
COMMENT ON COLUMN conveyor.lockers.maximum_buffer_size IS
  'The buffer''s maximum size at the last report_locker (it changes with the adaptive buffer).';
COMMENT ON COLUMN conveyor.lockers.reported_at IS
  'When the locker last called report_locker (a worker reports every few seconds while its buffer changes).';

CREATE FUNCTION conveyor.report_locker(buffer_size integer, maximum_buffer_size integer)
RETURNS boolean
LANGUAGE sql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
  WITH reported AS (
    UPDATE conveyor.lockers
       SET buffer_size = report_locker.buffer_size,
           maximum_buffer_size = report_locker.maximum_buffer_size,
           reported_at = now()
     WHERE pid = pg_catalog.pg_backend_pid()
    RETURNING pid)
  SELECT EXISTS (SELECT FROM reported);
$$;

COMMENT ON FUNCTION conveyor.report_locker(integer, integer) IS
  'Records the calling locker''s buffer: the locked jobs waiting for a worker thread and the '
  'buffer''s maximum, with the time, in its conveyor.lockers row; false when the session is '
  'not registered. For operators only: nothing in conveyor reads it to decide anything. Call '
  'it every few seconds at most. Errors: 23514 a negative size.';

REVOKE ALL ON FUNCTION conveyor.report_locker(integer, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION conveyor.report_locker(integer, integer) TO conveyor_worker;

COMMIT;
