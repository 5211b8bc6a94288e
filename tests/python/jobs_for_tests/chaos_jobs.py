"""The jobs of the chaos test (tests/python/test_chaos.py).

- ``AtomicJob`` writes its effect and destroys itself in one transaction on a
  connection from the worker's pool ("write results and destroy the job
  atomically"). If the destroy finds the job already gone -- another run of
  it committed first -- it rolls its effect back, so each job's effect exists
  exactly once.
- ``RecordedJob`` records each run in a table and leaves the resolution to
  the worker (destroy by default): at least once, duplicates allowed.
- ``DoomedJob`` always fails; enqueued with maximum_retry_count 0 it is
  expired on its first error (the "deliberately expired" jobs).

All retry quickly, since faults (terminated connections, a restarted server)
make jobs fail.
"""

from __future__ import annotations

import os
import time
from typing import Any

import psycopg

import conveyor

# Diagnostic switch: call conveyor.destroy_job in SQL instead of Job.destroy,
# to tell a wrong return value of Job.destroy(conn=...) from other causes of
# an effect seen twice. The test suite never sets it.
_SQL_DESTROY = os.environ.get("CONVEYOR_CHAOS_SQL_DESTROY") == "1"


_INSERT = {
    table: f"INSERT INTO {table} (job_id, n, worker_pid) VALUES (%s, %s, %s)"
    for table in ("chaos_effects", "chaos_runs")
}


def record(conn: psycopg.Connection[Any], table: str, job: conveyor.Job, n: int) -> None:
    """One row in ``table`` (chaos_effects or chaos_runs, made by the test)."""
    conn.execute(_INSERT[table], (job.id, n, os.getpid()))


class AtomicJob(conveyor.Job):
    retry_interval = 0.2

    def run(self, n: int, sleep_ms: float) -> None:
        time.sleep(sleep_ms / 1000)
        with self.connection() as conn:
            record(conn, "chaos_effects", self, n)
            if _SQL_DESTROY:
                row = conn.execute("SELECT conveyor.destroy_job(%s)", (self.id,)).fetchone()
                destroyed = bool(row and row[0])
            else:
                destroyed = self.destroy(conn=conn)
            if not destroyed:
                conn.rollback()


class DestroyTwice(conveyor.Job):
    """Records what destroy(conn=...) says the first and the second time."""

    def run(self) -> None:
        with self.connection() as conn:
            first = self.destroy(conn=conn)
            second = self.destroy(conn=conn)
            record(conn, "chaos_runs", self, int(first) * 10 + int(second))


class RecordedJob(conveyor.Job):
    retry_interval = 0.2

    def run(self, n: int, sleep_ms: float) -> None:
        time.sleep(sleep_ms / 1000)
        with self.connection() as conn:
            record(conn, "chaos_runs", self, n)


class DoomedJob(conveyor.Job):
    def run(self, n: int, sleep_ms: float) -> None:
        raise RuntimeError(f"job {n} is doomed")
