#!/usr/bin/env python3
# ruff: noqa: E501  -- the SQL it writes reads best unwrapped
"""Write a psql script that measures what the batch triggers cost jobs
WITHOUT a batch, in one session, pairing each round with the triggers
against the same round without them (dropped and re-created between), so
drift in a loaded machine's speed cancels out.

    python3 bench/sql/batch_trigger_overhead.py > /tmp/paired.sql
    psql -X -v ON_ERROR_STOP=1 "$URL_OF_A_SCRATCH_DATABASE_WITH_CONVEYOR" -f /tmp/paired.sql

It TRUNCATEs conveyor.jobs: never run it against a database in use. Prints
the median microseconds per enqueue+destroy and enqueue+finish with and
without the triggers, and the median (min, max) of the paired ratios.
"""

ROUNDS = 24
JOBS_PER_ROUND = 2000

DROP = """BEGIN;
DROP TRIGGER _100_join_batch ON conveyor.jobs;
DROP TRIGGER _200_resolve_in_batch ON conveyor.jobs;
DROP TRIGGER _200_destroy_in_batch ON conveyor.jobs;
COMMIT;"""

# As deploy/batches.sql creates them.
CREATE = """BEGIN;
CREATE TRIGGER _100_join_batch BEFORE INSERT ON conveyor.jobs FOR EACH ROW
  WHEN (NEW.batch_id IS NOT NULL) EXECUTE FUNCTION conveyor.tg_jobs__join_batch();
CREATE TRIGGER _200_resolve_in_batch AFTER UPDATE OF finished_at, expired_at ON conveyor.jobs FOR EACH ROW
  WHEN (NEW.batch_id IS NOT NULL AND OLD.finished_at IS NULL AND OLD.expired_at IS NULL
        AND (NEW.finished_at IS NOT NULL OR NEW.expired_at IS NOT NULL))
  EXECUTE FUNCTION conveyor.tg_jobs__resolve_in_batch();
CREATE TRIGGER _200_destroy_in_batch AFTER DELETE ON conveyor.jobs FOR EACH ROW
  WHEN (OLD.batch_id IS NOT NULL AND OLD.finished_at IS NULL AND OLD.expired_at IS NULL)
  EXECUTE FUNCTION conveyor.tg_jobs__resolve_in_batch();
COMMIT;"""

RUN = """CREATE FUNCTION pg_temp.run(action text, n integer) RETURNS double precision LANGUAGE plpgsql AS $$
DECLARE v_id bigint; t0 timestamptz;
BEGIN
  t0 := clock_timestamp();
  FOR i IN 1..n LOOP
    v_id := (conveyor.enqueue('bench.NoBatch')).id;
    IF action = 'destroy' THEN PERFORM conveyor.destroy_job(v_id); ELSE PERFORM conveyor.finish_job(v_id); END IF;
  END LOOP;
  RETURN extract(epoch FROM clock_timestamp() - t0) * 1e6 / n;
END $$;
CREATE TEMP TABLE results (round int, action text, triggers boolean, us double precision);"""

REPORT = """SELECT action, triggers,
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY us)::numeric, 2) AS median_us_per_enqueue_and_resolve
  FROM results GROUP BY 1, 2 ORDER BY 1, 2;
SELECT a.action,
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY a.us / b.us)::numeric, 4) AS median_ratio_with_over_without,
       round(min(a.us / b.us)::numeric, 4) AS min_ratio, round(max(a.us / b.us)::numeric, 4) AS max_ratio
  FROM results AS a JOIN results AS b ON a.round = b.round AND a.action = b.action AND a.triggers AND NOT b.triggers
 GROUP BY 1;"""


def main() -> None:
    out = ["\\set QUIET on", RUN]
    for round_number in range(ROUNDS):
        for action in ("destroy", "finish"):
            # ABBA: alternate which side runs first.
            order = (True, False) if round_number % 2 == 0 else (False, True)
            for with_triggers in order:
                if not with_triggers:
                    out.append(DROP)
                out.append("TRUNCATE conveyor.jobs;")
                out.append(
                    f"INSERT INTO results SELECT {round_number}, '{action}', {str(with_triggers).lower()},"
                    f" pg_temp.run('{action}', {JOBS_PER_ROUND});"
                )
                if not with_triggers:
                    out.append(CREATE)
    out.append(REPORT)
    print("\n".join(out))


if __name__ == "__main__":
    main()
