-- Deploy conveyor:cron_next to pg
-- requires: schema

BEGIN;

CREATE FUNCTION conveyor.cron_field(field text, field_name text, lo integer, hi integer, names text[])
RETURNS bigint
LANGUAGE plpgsql
IMMUTABLE
STRICT
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_item text;
  v_parts text[];
  v_range text[];
  v_from integer;
  v_to integer;
  v_step integer;
  v_bits bigint := 0;
  v_value integer;
  v_max integer := cron_field.hi;
  v_word text;
  v_idx integer;
  v_ends integer[];
BEGIN
  -- Day of week accepts 7 as Sunday: read values 0-7, fold 7 onto 0 at the end.
  IF cron_field.field_name = 'day of week' THEN
    v_max := 7;
  END IF;
  FOREACH v_item IN ARRAY string_to_array(cron_field.field, ',') LOOP
    v_parts := string_to_array(v_item, '/');
    IF v_item = '' OR cardinality(v_parts) > 2 THEN
      RAISE EXCEPTION 'conveyor: % field "%": "%" is not a value, a range or a step', cron_field.field_name, cron_field.field, v_item
        USING ERRCODE = '22023';
    END IF;
    v_step := 1;
    IF cardinality(v_parts) = 2 THEN
      IF v_parts[2] !~ '^[0-9]{1,4}$' OR v_parts[2]::integer = 0 THEN
        RAISE EXCEPTION 'conveyor: % field "%": step "%" must be a positive whole number', cron_field.field_name, cron_field.field, v_parts[2]
          USING ERRCODE = '22023';
      END IF;
      v_step := v_parts[2]::integer;
    END IF;
    IF v_parts[1] IN ('*', '?') THEN
      v_from := cron_field.lo;
      v_to := cron_field.hi;
    ELSE
      v_range := string_to_array(v_parts[1], '-');
      IF cardinality(v_range) > 2 THEN
        RAISE EXCEPTION 'conveyor: % field "%": "%" is not a value or a range', cron_field.field_name, cron_field.field, v_parts[1]
          USING ERRCODE = '22023';
      END IF;
      v_ends := ARRAY[]::integer[];
      FOREACH v_word IN ARRAY v_range LOOP
        IF v_word ~ '^[0-9]{1,4}$' THEN
          v_value := v_word::integer;
        ELSE
          v_idx := array_position(cron_field.names, lower(v_word));
          IF v_idx IS NULL THEN
            RAISE EXCEPTION 'conveyor: % field "%": "%" is not a number%', cron_field.field_name, cron_field.field, v_word,
              CASE WHEN cardinality(cron_field.names) > 0 THEN ' or a name (' || array_to_string(cron_field.names, ' ') || ')' ELSE '' END
              USING ERRCODE = '22023';
          END IF;
          v_value := v_idx - 1 + cron_field.lo;
        END IF;
        IF v_value < cron_field.lo OR v_value > v_max THEN
          RAISE EXCEPTION 'conveyor: % field "%": % is out of range %-%', cron_field.field_name, cron_field.field, v_value, cron_field.lo, v_max
            USING ERRCODE = '22023';
        END IF;
        v_ends := v_ends || v_value;
      END LOOP;
      v_from := v_ends[1];
      -- "a/step" runs from a to the field's maximum, as in croniter.
      v_to := CASE WHEN cardinality(v_ends) = 2 THEN v_ends[2]
                   WHEN cardinality(v_parts) = 2 THEN cron_field.hi
                   ELSE v_from END;
    END IF;
    IF v_from > v_to THEN
      -- Vixie cron rejects these too; croniter reads them in ways of its own.
      RAISE EXCEPTION 'conveyor: % field "%": range %-% runs backwards', cron_field.field_name, cron_field.field, v_from, v_to
        USING ERRCODE = '22023';
    END IF;
    FOR v_value IN v_from .. v_to BY v_step LOOP
      v_bits := v_bits | (1::bigint << v_value);
    END LOOP;
  END LOOP;
  IF cron_field.field_name = 'day of week' AND (v_bits & 128) <> 0 THEN
    v_bits := (v_bits & 127) | 1;
  END IF;
  RETURN v_bits;
END
$$;

COMMENT ON FUNCTION conveyor.cron_field(text, text, integer, integer, text[]) IS
  'Internal. Parses one field of a cron expression (values, names, lists, ranges, '
  'steps) into a bit set: bit n set when value n matches. '
  'Raises 22023 naming the field for a malformed one.';

CREATE FUNCTION conveyor.cron_parse(cron text)
RETURNS bigint[]
LANGUAGE plpgsql
IMMUTABLE
STRICT
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_text text := lower(btrim(cron_parse.cron));
  v_fields text[];
  v_dom bigint;
  v_month bigint;
  v_dow bigint;
  v_month_no integer;
  v_possible boolean := false;
BEGIN
  v_text := CASE v_text
    WHEN '@yearly' THEN '0 0 1 1 *'
    WHEN '@annually' THEN '0 0 1 1 *'
    WHEN '@monthly' THEN '0 0 1 * *'
    WHEN '@weekly' THEN '0 0 * * 0'
    WHEN '@daily' THEN '0 0 * * *'
    WHEN '@midnight' THEN '0 0 * * *'
    WHEN '@hourly' THEN '0 * * * *'
    ELSE v_text END;
  IF v_text LIKE '@%' THEN
    RAISE EXCEPTION 'conveyor: unknown cron macro "%" (known: @yearly @annually @monthly @weekly @daily @midnight @hourly)', cron_parse.cron
      USING ERRCODE = '22023';
  END IF;
  v_fields := regexp_split_to_array(v_text, '\s+');
  IF cardinality(v_fields) <> 5 OR v_text = '' THEN
    RAISE EXCEPTION 'conveyor: cron expression "%" must have 5 fields (minute hour day-of-month month day-of-week), not %',
      cron_parse.cron, CASE WHEN v_text = '' THEN 0 ELSE cardinality(v_fields) END
      USING ERRCODE = '22023';
  END IF;
  -- Fast paths for * and a plain number, the commonest fields: no call of cron_field.
  v_dom := CASE WHEN v_fields[3] IN ('*', '?') THEN 4294967294
                WHEN v_fields[3] ~ '^[0-9]{1,2}$' AND v_fields[3]::integer BETWEEN 1 AND 31
                THEN 1::bigint << v_fields[3]::integer
                ELSE conveyor.cron_field(v_fields[3], 'day of month', 1, 31, '{}') END;
  v_month := CASE WHEN v_fields[4] IN ('*', '?') THEN 8190
                  WHEN v_fields[4] ~ '^[0-9]{1,2}$' AND v_fields[4]::integer BETWEEN 1 AND 12
                  THEN 1::bigint << v_fields[4]::integer
                  ELSE conveyor.cron_field(v_fields[4], 'month', 1, 12,
                         '{jan,feb,mar,apr,may,jun,jul,aug,sep,oct,nov,dec}') END;
  v_dow := CASE WHEN v_fields[5] IN ('*', '?') THEN 127
                WHEN v_fields[5] ~ '^[0-7]$' THEN 1::bigint << (v_fields[5]::integer % 7)
                ELSE conveyor.cron_field(v_fields[5], 'day of week', 0, 6, '{sun,mon,tue,wed,thu,fri,sat}') END;
  -- An expression whose days never exist (30 2, 31 4) would search forever.
  IF v_fields[5] IN ('*', '?') THEN
    FOR v_month_no IN 1 .. 12 LOOP
      IF (v_month & (1::bigint << v_month_no)) <> 0
         AND (v_dom & ((1::bigint << (CASE WHEN v_month_no = 2 THEN 29
                                            WHEN v_month_no IN (4, 6, 9, 11) THEN 30
                                            ELSE 31 END + 1)) - 2)) <> 0 THEN
        v_possible := true;
      END IF;
    END LOOP;
    IF NOT v_possible THEN
      RAISE EXCEPTION 'conveyor: cron expression "%" never matches: no month it names has the days it names', cron_parse.cron
        USING ERRCODE = '22023';
    END IF;
  END IF;
  RETURN ARRAY[
    CASE WHEN v_fields[1] IN ('*', '?') THEN 1152921504606846975
         WHEN v_fields[1] ~ '^[0-9]{1,2}$' AND v_fields[1]::integer <= 59 THEN 1::bigint << v_fields[1]::integer
         ELSE conveyor.cron_field(v_fields[1], 'minute', 0, 59, '{}') END,
    CASE WHEN v_fields[2] IN ('*', '?') THEN 16777215
         WHEN v_fields[2] ~ '^[0-9]{1,2}$' AND v_fields[2]::integer <= 23 THEN 1::bigint << v_fields[2]::integer
         ELSE conveyor.cron_field(v_fields[2], 'hour', 0, 23, '{}') END,
    v_dom, v_month, v_dow,
    -- 1: both day fields restricted, a day matches when either does (Vixie cron,
    -- and croniter: a field counts as restricted unless it is * or ?).
    CASE WHEN v_fields[3] NOT IN ('*', '?') AND v_fields[5] NOT IN ('*', '?') THEN 1 ELSE 0 END,
    -- 1: the hour field is *, so a time skipped by a DST change is skipped (croniter).
    CASE WHEN v_fields[2] = '*' THEN 1 ELSE 0 END
  ];
END
$$;

COMMENT ON FUNCTION conveyor.cron_parse(text) IS
  'Internal. Parses a 5-field cron expression or macro into bit sets {minute, hour, '
  'day of month, month, day of week, 1 when a day matches on either day field, 1 when '
  'the hour field is *}. '
  'Raises 22023 naming the bad field, or when no date can ever match.';

CREATE FUNCTION conveyor.cron_next(cron text, after timestamptz, time_zone text DEFAULT 'UTC')
RETURNS timestamptz
LANGUAGE plpgsql
IMMUTABLE
STRICT
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_spec bigint[] := conveyor.cron_parse(cron_next.cron);
  v_minutes bigint := v_spec[1];
  v_hours bigint := v_spec[2];
  v_doms bigint := v_spec[3];
  v_months bigint := v_spec[4];
  v_dows bigint := v_spec[5];
  v_either boolean := v_spec[6] = 1;
  v_every_hour boolean := v_spec[7] = 1;
  v_tz text := cron_next.time_zone;
  v_local timestamp;
  v_off_a interval;
  v_off_b interval;
  v_best timestamptz;
  v_cand timestamptz;
  v_early timestamptz;
  v_late timestamptz;
  v_lo timestamptz;
  v_hi timestamptz;
  v_mid timestamptz;
  v_day_ok boolean;
  v_m integer;
  v_h integer;
  v_guard integer := 0;
BEGIN
  IF NOT isfinite(cron_next.after) THEN
    RAISE EXCEPTION 'conveyor.cron_next: after must be a finite time, not %', cron_next.after
      USING ERRCODE = '22007';
  END IF;
  -- Offsets (local minus UTC) three hours either side of `after`: zones change
  -- offset at most once in six hours, so the smaller one bounds how early a
  -- local time can be and still come after `after` (a repeated hour).
  v_off_a := (cron_next.after - interval '3 hours') AT TIME ZONE v_tz
             - ((cron_next.after - interval '3 hours') AT TIME ZONE 'UTC');
  v_off_b := (cron_next.after + interval '3 hours') AT TIME ZONE v_tz
             - ((cron_next.after + interval '3 hours') AT TIME ZONE 'UTC');
  v_local := date_trunc('minute', (cron_next.after AT TIME ZONE 'UTC') + least(v_off_a, v_off_b))
             + interval '1 minute';

  LOOP
    v_guard := v_guard + 1;
    IF v_guard > 100000 THEN
      RAISE EXCEPTION 'conveyor.cron_next: no occurrence of "%" found', cron_next.cron USING ERRCODE = '22023';
    END IF;
    -- Jump field by field in wall-clock time (a timestamp without time zone).
    IF (v_months & (1::bigint << extract(month FROM v_local)::integer)) = 0 THEN
      v_local := date_trunc('month', v_local) + interval '1 month';
      CONTINUE;
    END IF;
    v_day_ok := CASE WHEN v_either
      THEN (v_doms & (1::bigint << extract(day FROM v_local)::integer)) <> 0
           OR (v_dows & (1::bigint << extract(dow FROM v_local)::integer)) <> 0
      ELSE (v_doms & (1::bigint << extract(day FROM v_local)::integer)) <> 0
           AND (v_dows & (1::bigint << extract(dow FROM v_local)::integer)) <> 0 END;
    IF NOT v_day_ok THEN
      v_local := date_trunc('day', v_local) + interval '1 day';
      CONTINUE;
    END IF;
    v_h := extract(hour FROM v_local)::integer;
    IF (v_hours & (1::bigint << v_h)) = 0 THEN
      v_local := date_trunc('hour', v_local) + interval '1 hour';
      CONTINUE;
    END IF;
    v_m := extract(minute FROM v_local)::integer;
    IF (v_minutes & (1::bigint << v_m)) = 0 THEN
      -- The next matching minute of this hour, or the next hour.
      v_m := v_m + 1;
      WHILE v_m < 60 AND (v_minutes & (1::bigint << v_m)) = 0 LOOP
        v_m := v_m + 1;
      END LOOP;
      v_local := date_trunc('hour', v_local) + make_interval(mins => v_m);
      CONTINUE;
    END IF;

    -- v_local matches. Its instants: the offset before and after any change
    -- near it give one instant (no change), two (a repeated hour: both run)
    -- or none (a skipped hour). Like croniter, a skipped time runs once, at
    -- the change itself, unless the hour field is * (then it is just skipped:
    -- an hourly job does not run twice at the change).
    v_cand := NULL;
    v_off_a := ((v_local AT TIME ZONE v_tz) - interval '3 hours') AT TIME ZONE v_tz
               - (((v_local AT TIME ZONE v_tz) - interval '3 hours') AT TIME ZONE 'UTC');
    v_off_b := ((v_local AT TIME ZONE v_tz) + interval '3 hours') AT TIME ZONE v_tz
               - (((v_local AT TIME ZONE v_tz) + interval '3 hours') AT TIME ZONE 'UTC');
    v_early := (v_local - greatest(v_off_a, v_off_b)) AT TIME ZONE 'UTC';
    v_late := (v_local - least(v_off_a, v_off_b)) AT TIME ZONE 'UTC';
    IF (v_early AT TIME ZONE v_tz) = v_local AND v_early > cron_next.after THEN
      v_cand := v_early;
    ELSIF (v_late AT TIME ZONE v_tz) = v_local AND v_late > cron_next.after THEN
      v_cand := v_late;
    ELSIF (v_early AT TIME ZONE v_tz) <> v_local AND (v_late AT TIME ZONE v_tz) <> v_local
          AND NOT v_every_hour THEN
      -- Skipped: find the change, the first minute with the later offset.
      v_lo := (v_local AT TIME ZONE v_tz) - interval '3 hours';
      v_hi := (v_local AT TIME ZONE v_tz) + interval '3 hours';
      WHILE v_hi - v_lo > interval '1 minute' LOOP
        v_mid := v_lo + date_trunc('minute', (v_hi - v_lo) / 2);
        IF (v_mid AT TIME ZONE v_tz) - (v_mid AT TIME ZONE 'UTC') = v_off_b THEN
          v_hi := v_mid;
        ELSE
          v_lo := v_mid;
        END IF;
      END LOOP;
      IF v_hi > cron_next.after THEN
        v_cand := v_hi;
      END IF;
    END IF;

    IF v_cand IS NOT NULL AND (v_best IS NULL OR v_cand < v_best) THEN
      v_best := v_cand;
    END IF;
    -- Later wall-clock times can still be earlier instants only within a
    -- repeated hour: stop once no instant of this local time can precede the best.
    IF v_best IS NOT NULL AND (v_local - greatest(v_off_a, v_off_b)) AT TIME ZONE 'UTC' >= v_best THEN
      RETURN v_best;
    END IF;
    v_local := v_local + interval '1 minute';
  END LOOP;
END
$$;

COMMENT ON FUNCTION conveyor.cron_next(text, timestamptz, text) IS
  'The first occurrence of a cron expression strictly after `after`, read on the wall clock '
  'of time_zone (default ''UTC''; any name PostgreSQL knows, e.g. ''Europe/Berlin''). '
  'Five fields, minute hour day-of-month month day-of-week: * (or ?), numbers, lists (1,15), '
  'ranges (1-5, mon-fri; not backwards), steps (*/15, 1-30/5, 5/20 = 5-59/20), month names jan-dec '
  'and weekday names sun-sat (any case), 7 for Sunday; when both day fields are restricted a day '
  'matches on either (Vixie cron). Macros @yearly @annually @monthly @weekly @daily @midnight @hourly. '
  'Across DST changes it agrees with croniter: a local time that occurs twice (clocks go back) '
  'runs at both instants; local times skipped when clocks go forward run once, at the instant '
  'of the change (when the hour field is *, they are skipped instead). NULL arguments give NULL. '
  'Errors: 22023 a malformed expression (the message '
  'names the field), one that can never match (30 2), an unknown time zone; 22007 an infinite after. IMMUTABLE as '
  'PostgreSQL''s own AT TIME ZONE is: the answer depends only on the arguments and the time '
  'zone database, which an upgrade of tzdata can change.';

REVOKE ALL ON FUNCTION conveyor.cron_field(text, text, integer, integer, text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION conveyor.cron_parse(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION conveyor.cron_next(text, timestamptz, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION conveyor.cron_field(text, text, integer, integer, text[]) TO conveyor_worker;
GRANT EXECUTE ON FUNCTION conveyor.cron_parse(text) TO conveyor_worker;
GRANT EXECUTE ON FUNCTION conveyor.cron_next(text, timestamptz, text) TO conveyor_worker;

COMMIT;
