-- Deploy conveyor:schedules to pg
-- requires: cron_next
-- requires: enqueue

BEGIN;

CREATE TABLE conveyor.schedules (
  name         text        PRIMARY KEY,
  cron         text        NOT NULL,
  time_zone    text        NOT NULL DEFAULT 'UTC',
  job_class    text        NOT NULL,
  args         jsonb       NOT NULL DEFAULT '[]',
  queue        text        NOT NULL DEFAULT 'default',
  priority     smallint    NOT NULL DEFAULT 100,
  data         jsonb       NOT NULL DEFAULT '{}',
  enabled      boolean     NOT NULL DEFAULT true,
  catch_up     boolean     NOT NULL DEFAULT false,
  last_run_at  timestamptz,
  next_run_at  timestamptz NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  updated_at   timestamptz NOT NULL DEFAULT now(),

  CONSTRAINT schedules_name_length CHECK (char_length(name) BETWEEN 1 AND 200),
  CONSTRAINT schedules_cron_length CHECK (char_length(cron) BETWEEN 1 AND 200),
  CONSTRAINT schedules_time_zone_length CHECK (char_length(time_zone) BETWEEN 1 AND 100),
  CONSTRAINT schedules_job_class_length CHECK (char_length(job_class) BETWEEN 1 AND 500),
  CONSTRAINT schedules_queue_length CHECK (char_length(queue) BETWEEN 1 AND 100),
  CONSTRAINT schedules_priority_in_range CHECK (priority >= 0),
  CONSTRAINT schedules_args_is_array CHECK (jsonb_typeof(args) = 'array'),
  CONSTRAINT schedules_data_is_object CHECK (jsonb_typeof(data) = 'object'),
  CONSTRAINT schedules_next_run_after_last_run CHECK (next_run_at > last_run_at)
);

CREATE INDEX schedules_due_idx ON conveyor.schedules (next_run_at) WHERE enabled;

COMMENT ON TABLE conveyor.schedules IS
  'One row per recurring job. Write through set_schedule, set_schedule_enabled and '
  'delete_schedule; enqueue_due_schedules turns due occurrences into jobs.';
COMMENT ON COLUMN conveyor.schedules.name IS 'The schedule''s name (1 to 200 characters); jobs carry it in data.schedule.name.';
COMMENT ON COLUMN conveyor.schedules.cron IS 'A 5-field cron expression or macro, as conveyor.cron_next reads it.';
COMMENT ON COLUMN conveyor.schedules.time_zone IS 'The time zone whose wall clock the expression is read on.';
COMMENT ON COLUMN conveyor.schedules.job_class IS 'job_class of the enqueued jobs.';
COMMENT ON COLUMN conveyor.schedules.args IS 'args of the enqueued jobs: a JSON array.';
COMMENT ON COLUMN conveyor.schedules.queue IS 'queue of the enqueued jobs.';
COMMENT ON COLUMN conveyor.schedules.priority IS 'priority of the enqueued jobs.';
COMMENT ON COLUMN conveyor.schedules.data IS 'data of the enqueued jobs, to which enqueue_due_schedules adds the key schedule.';
COMMENT ON COLUMN conveyor.schedules.enabled IS 'A disabled schedule enqueues nothing; re-enabled, it resumes at its next occurrence after that moment.';
COMMENT ON COLUMN conveyor.schedules.catch_up IS 'After downtime: false enqueues only the latest missed occurrence, true every missed one (at most 1,000 per call).';
COMMENT ON COLUMN conveyor.schedules.last_run_at IS 'The latest occurrence enqueued, NULL before the first.';
COMMENT ON COLUMN conveyor.schedules.next_run_at IS 'The earliest occurrence not yet enqueued; due once it is <= now().';

REVOKE ALL ON conveyor.schedules FROM PUBLIC;
GRANT SELECT ON conveyor.schedules TO conveyor_worker;

CREATE FUNCTION conveyor.set_schedule(
  name text,
  cron text,
  job_class text,
  args jsonb DEFAULT '[]',
  queue text DEFAULT 'default',
  priority integer DEFAULT 100,
  data jsonb DEFAULT '{}',
  time_zone text DEFAULT 'UTC',
  enabled boolean DEFAULT true,
  catch_up boolean DEFAULT false
)
RETURNS conveyor.schedules
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_problem record;
  v_next timestamptz;
  v_row conveyor.schedules;
BEGIN
  IF set_schedule.name IS NULL OR set_schedule.cron IS NULL OR set_schedule.time_zone IS NULL
     OR set_schedule.enabled IS NULL OR set_schedule.catch_up IS NULL THEN
    RAISE EXCEPTION 'conveyor.set_schedule: name, cron, time_zone, enabled and catch_up must not be NULL'
      USING ERRCODE = '22004';
  END IF;
  IF char_length(set_schedule.name) NOT BETWEEN 1 AND 200 THEN
    RAISE EXCEPTION 'conveyor.set_schedule: name must be 1 to 200 characters, not %', char_length(set_schedule.name)
      USING ERRCODE = '22023';
  END IF;
  -- The job's fields follow enqueue's rules, reported the same way.
  v_problem := conveyor.job_problem(set_schedule.job_class, set_schedule.args, set_schedule.queue,
                                    set_schedule.priority, now(), set_schedule.data, 0);
  IF v_problem.error_code IS NOT NULL THEN
    RAISE EXCEPTION 'conveyor.set_schedule: %', v_problem.error_message USING ERRCODE = v_problem.error_code;
  END IF;
  -- Raises 22023 for a malformed expression or an unknown time zone.
  v_next := conveyor.cron_next(set_schedule.cron, now(), set_schedule.time_zone);

  INSERT INTO conveyor.schedules AS s
    (name, cron, time_zone, job_class, args, queue, priority, data, enabled, catch_up, next_run_at)
  VALUES (set_schedule.name, set_schedule.cron, set_schedule.time_zone, set_schedule.job_class,
          set_schedule.args, set_schedule.queue, set_schedule.priority, set_schedule.data,
          set_schedule.enabled, set_schedule.catch_up, v_next)
  ON CONFLICT ON CONSTRAINT schedules_pkey DO UPDATE
    SET cron = excluded.cron, time_zone = excluded.time_zone, job_class = excluded.job_class,
        args = excluded.args, queue = excluded.queue, priority = excluded.priority,
        data = excluded.data, enabled = excluded.enabled, catch_up = excluded.catch_up,
        -- Same timing and still enabled: keep the pending occurrence (a worker
        -- re-declaring its schedules at start-up loses no run). Otherwise the
        -- next occurrence from now on.
        next_run_at = CASE WHEN s.cron = excluded.cron AND s.time_zone = excluded.time_zone
                                AND s.enabled AND excluded.enabled
                           THEN s.next_run_at
                           -- Never at or before an occurrence already enqueued.
                           ELSE conveyor.cron_next(excluded.cron, greatest(now(), s.last_run_at), excluded.time_zone) END,
        updated_at = now()
  RETURNING * INTO v_row;
  RETURN v_row;
END
$$;

COMMENT ON FUNCTION conveyor.set_schedule(text, text, text, jsonb, text, integer, jsonb, text, boolean, boolean) IS
  'Creates or replaces the schedule `name` and returns its row. cron: 5 fields or a macro '
  '(see cron_next); time_zone (default ''UTC''): its wall clock; job_class, args, queue, '
  'priority, data: the jobs to enqueue, with enqueue''s rules and defaults; enabled (default '
  'true); catch_up (default false: after downtime only the latest missed occurrence). '
  'Replacing a schedule with the same cron and time zone keeps its pending occurrence; a new '
  'cron, time zone or re-enabling starts from the next occurrence after now(). Errors: 22004 a '
  'NULL; 22023 a malformed cron expression (the message names the field), an unknown time '
  'zone, an empty name; and enqueue''s errors for the job fields. Locks the schedule''s row. '
  'Executable by the schema owner only (grant it to an administrative role of your own).';

CREATE FUNCTION conveyor.set_schedule_enabled(name text, enabled boolean)
RETURNS boolean
LANGUAGE sql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
  UPDATE conveyor.schedules AS s
     SET enabled = set_schedule_enabled.enabled,
         next_run_at = CASE WHEN set_schedule_enabled.enabled AND NOT s.enabled
                            THEN conveyor.cron_next(s.cron, greatest(now(), s.last_run_at), s.time_zone)
                            ELSE s.next_run_at END,
         updated_at = now()
   WHERE s.name = set_schedule_enabled.name
  RETURNING true;
$$;

COMMENT ON FUNCTION conveyor.set_schedule_enabled(text, boolean) IS
  'Enables or disables the schedule `name`; true if it exists, NULL if not. A re-enabled '
  'schedule resumes at its next occurrence after now(): what fell due while it was disabled '
  'is not enqueued. Owner only, like set_schedule.';

CREATE FUNCTION conveyor.delete_schedule(name text)
RETURNS boolean
LANGUAGE sql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
  WITH deleted AS (
    DELETE FROM conveyor.schedules AS s WHERE s.name = delete_schedule.name RETURNING 1
  )
  SELECT EXISTS (SELECT FROM deleted);
$$;

COMMENT ON FUNCTION conveyor.delete_schedule(text) IS
  'Deletes the schedule `name`; true if there was one. Jobs it already enqueued stay. Owner only.';

CREATE FUNCTION conveyor.enqueue_schedules_due_at(as_of timestamptz)
RETURNS SETOF bigint
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_s conveyor.schedules;
  v_at timestamptz;
  v_probe timestamptz;
  v_next timestamptz;
  v_window interval;
  v_count integer;
  v_last timestamptz;
  v_ids bigint[];
BEGIN
  -- A due schedule's row is locked while its occurrences are enqueued and
  -- next_run_at moved past them, in this transaction. Another session skips
  -- the locked row; once this one commits, the row is no longer due (READ
  -- COMMITTED re-checks the WHERE clause on the new row version), so each
  -- occurrence becomes exactly one job.
  FOR v_s IN
    SELECT * FROM conveyor.schedules AS s
     WHERE s.enabled AND s.next_run_at <= enqueue_schedules_due_at.as_of
     ORDER BY s.next_run_at, s.name
       FOR UPDATE SKIP LOCKED
  LOOP
    v_ids := '{}';
    BEGIN
      v_at := v_s.next_run_at;
      IF NOT v_s.catch_up THEN
        -- The latest occurrence <= as_of: look back over doubling windows
        -- (cheap for any cron), then step forward to the last one inside.
        v_window := interval '1 minute';
        LOOP
          EXIT WHEN enqueue_schedules_due_at.as_of - v_window <= v_at;
          v_probe := conveyor.cron_next(v_s.cron, enqueue_schedules_due_at.as_of - v_window, v_s.time_zone);
          IF v_probe <= enqueue_schedules_due_at.as_of THEN
            v_at := v_probe;
            EXIT;
          END IF;
          v_window := v_window * 2;
        END LOOP;
        LOOP
          v_next := conveyor.cron_next(v_s.cron, v_at, v_s.time_zone);
          EXIT WHEN v_next > enqueue_schedules_due_at.as_of;
          v_at := v_next;
        END LOOP;
      END IF;
      v_count := 0;
      LOOP
        -- Collected, and returned only once the schedule's block has
        -- succeeded: ids returned before a rolled-back error would name no job.
        v_ids := v_ids || (conveyor.enqueue(
          v_s.job_class, v_s.args, queue => v_s.queue, priority => v_s.priority, run_at => v_at,
          data => v_s.data || jsonb_build_object('schedule', jsonb_build_object(
            'name', v_s.name,
            'at', to_char(v_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')))
        )).id;
        v_last := v_at;
        v_count := v_count + 1;
        v_at := conveyor.cron_next(v_s.cron, v_at, v_s.time_zone);
        EXIT WHEN v_at > enqueue_schedules_due_at.as_of OR v_count >= 1000;
      END LOOP;
      UPDATE conveyor.schedules AS s
         SET last_run_at = v_last, next_run_at = v_at
       WHERE s.name = v_s.name;
    EXCEPTION WHEN OTHERS THEN
      -- One broken schedule (a time zone a tzdata upgrade removed, a job its
      -- fields no longer allow) must not stop the others.
      RAISE WARNING 'conveyor: schedule "%" not enqueued: % (SQLSTATE %)', v_s.name, SQLERRM, SQLSTATE;
      v_ids := '{}';
    END;
    RETURN QUERY SELECT unnest(v_ids);
  END LOOP;
END
$$;

COMMENT ON FUNCTION conveyor.enqueue_schedules_due_at(timestamptz) IS
  'Internal, and the test hook: enqueue_due_schedules as if now() were as_of. Owner only, since '
  'a time in the future would enqueue occurrences early and skip those in between.';

CREATE FUNCTION conveyor.enqueue_due_schedules()
RETURNS SETOF bigint
LANGUAGE sql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT conveyor.enqueue_schedules_due_at(now());
$$;

COMMENT ON FUNCTION conveyor.enqueue_due_schedules() IS
  'Enqueues every due occurrence (next_run_at <= now()) of every enabled schedule and returns '
  'the new jobs'' ids. Each job has run_at = its occurrence and data.schedule = {"name": ..., '
  '"at": the occurrence in UTC, ISO 8601}. After downtime a schedule enqueues only its latest '
  'missed occurrence, or with catch_up every missed one (at most 1,000 per call; the next call '
  'goes on). Exactly once: each due schedule''s row is locked (FOR UPDATE SKIP LOCKED) while its '
  'next_run_at is moved past what it enqueued, in the caller''s transaction, so any number of '
  'sessions may call it at once (in READ COMMITTED; at REPEATABLE READ a concurrent call may '
  'fail with 40001 and can be retried). A schedule that fails (e.g. its time zone is gone) is '
  'skipped with a WARNING. New jobs are announced at commit like any other. SECURITY DEFINER; '
  'executable by conveyor_worker.';

CREATE FUNCTION conveyor.next_schedule_at()
RETURNS timestamptz
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT min(s.next_run_at) FROM conveyor.schedules AS s WHERE s.enabled;
$$;

COMMENT ON FUNCTION conveyor.next_schedule_at() IS
  'The earliest next_run_at of the enabled schedules (NULL when there are none): a worker may '
  'sleep until then before calling enqueue_due_schedules. '
  'Executable by conveyor_worker.';

REVOKE ALL ON FUNCTION conveyor.set_schedule(text, text, text, jsonb, text, integer, jsonb, text, boolean, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION conveyor.set_schedule_enabled(text, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION conveyor.delete_schedule(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION conveyor.enqueue_schedules_due_at(timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION conveyor.enqueue_due_schedules() FROM PUBLIC;
REVOKE ALL ON FUNCTION conveyor.next_schedule_at() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION conveyor.enqueue_due_schedules() TO conveyor_worker;
GRANT EXECUTE ON FUNCTION conveyor.next_schedule_at() TO conveyor_worker;

COMMIT;
