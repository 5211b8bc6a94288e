"""What one job costs the server, for docs/performance.md "Capacity":
transactions, WAL bytes and backend CPU time per job, for enqueue (one job
per transaction, and batches of 1,000) and for working it (the worker's
lock_jobs and destroy_jobs, through its locker session).

Counted on the server: transactions from pg_stat_database (xact_commit +
xact_rollback of the run's database), WAL from pg_current_wal_lsn(), CPU
from /proc/<pid>/stat of the backend doing the work (utime + stime; the
server must run on this machine: None otherwise). Other sessions of the
database (the benchmark's monitor) add a few transactions, not per job."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import psycopg

from .. import recorder
from ..procs import WorkerProcesses
from ..results import Measurement
from ..systems import ConveyorSystem, System
from .base import Context, Runner, RunResult, Scenario

__all__ = ["DB_COST"]

_TICK = os.sysconf("SC_CLK_TCK")
_COUNTERS = (
    "SELECT xact_commit + xact_rollback, pg_current_wal_lsn() FROM pg_stat_database"
    " WHERE datname = current_database()"
)


def _cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICK


def _counters(mon: psycopg.Connection[Any]) -> tuple[int, str]:
    mon.execute("SELECT pg_stat_clear_snapshot()")
    row = mon.execute(_COUNTERS).fetchone()
    assert row is not None
    return int(row[0]), str(row[1])


def _cost(
    mon: psycopg.Connection[Any],
    before: tuple[int, str],
    after: tuple[int, str],
    cpu: float | None,
    jobs: int,
) -> dict[str, float | None]:
    wal = mon.execute("SELECT pg_wal_lsn_diff(%s, %s)", (after[1], before[1])).fetchone()
    assert wal is not None
    return {
        "xacts_per_job": (after[0] - before[0]) / jobs,
        "wal_bytes_per_job": float(wal[0]) / jobs,
        "cpu_us_per_job": None if cpu is None else cpu * 1e6 / jobs,
    }


def run_db_cost(ctx: Context, jobs: int) -> RunResult:
    system: System = ConveyorSystem()
    details: dict[str, Any] = {"jobs": jobs}
    with (
        ctx.server.fresh(system.schema, system.install) as url,
        psycopg.connect(url, autocommit=True) as mon,
    ):
        for label, batch in (
            ("enqueue, 1 per transaction", 1),
            ("enqueue, batches of 1,000", 1000),
        ):
            mon.execute("TRUNCATE conveyor.jobs")
            with psycopg.connect(url, autocommit=True) as conn:
                pid = conn.info.backend_pid
                cpu0, before = _cpu_seconds(pid), _counters(mon)
                if batch == 1:
                    for seq in range(1, jobs + 1):
                        conn.execute(
                            "SELECT conveyor.enqueue('BenchNoOp',"
                            " args => jsonb_build_array(%s::int))",
                            (seq,),
                        )
                else:
                    for first in range(1, jobs + 1, batch):
                        conn.execute(
                            "SELECT count(*) FROM conveyor.enqueue_many((SELECT jsonb_agg("
                            "jsonb_build_object('job_class', 'BenchNoOp',"
                            " 'args', jsonb_build_array(g)))"
                            " FROM generate_series(%s::int, %s::int) AS g))",
                            (first, min(jobs, first + batch - 1)),
                        )
                cpu1, after = _cpu_seconds(pid), _counters(mon)
            details[label] = _cost(
                mon, before, after, None if cpu0 is None or cpu1 is None else cpu1 - cpu0, jobs
            )
        mon.execute("VACUUM ANALYZE conveyor.jobs")
        argv, env = system.worker_command(url, 10)
        env[recorder.ENV] = str(ctx.new_dir("db-cost-records"))
        with WorkerProcesses(argv, env, 1, ctx.new_dir("logs"), "conveyor") as workers:
            deadline = time.monotonic() + 60
            pid_row = None
            while pid_row is None and time.monotonic() < deadline:
                workers.check()
                pid_row = mon.execute("SELECT pid FROM conveyor.lockers").fetchone()
                time.sleep(0.01)
            assert pid_row is not None, "the worker never registered"
            # Counted from registration: the jobs it locked before this are few
            # next to N, and counted in the WAL and transactions all the same.
            cpu0, before = _cpu_seconds(int(pid_row[0])), _counters(mon)
            while mon.execute(system.drained_sql).fetchone() != (True,):
                if time.monotonic() > deadline + 600:
                    raise TimeoutError("the worker did not drain the queue")
                time.sleep(0.05)
            cpu1, after = _cpu_seconds(int(pid_row[0])), _counters(mon)
        details["work (lock + destroy)"] = _cost(
            mon, before, after, None if cpu0 is None or cpu1 is None else cpu1 - cpu0, jobs
        )
    measurements = [
        Measurement("conveyor", key, float(value), unit, label, higher_is_better=False)
        for label in (
            "enqueue, 1 per transaction",
            "enqueue, batches of 1,000",
            "work (lock + destroy)",
        )
        for key, unit in (
            ("xacts_per_job", "xacts"),
            ("wal_bytes_per_job", "bytes"),
            ("cpu_us_per_job", "us"),
        )
        if (value := details[label][key]) is not None
    ]
    summary = "; ".join(
        f"{label}: " + ", ".join(f"{k} {v:.3g}" for k, v in details[label].items() if v is not None)
        for label in (
            "enqueue, 1 per transaction",
            "enqueue, batches of 1,000",
            "work (lock + destroy)",
        )
    )
    return RunResult(measurements, details, summary=summary)


DB_COST = Scenario(
    "db_cost",
    "server cost per job",
    "Transactions, WAL bytes and backend CPU microseconds per job: enqueue one "
    "per transaction, enqueue in batches of 1,000, and a worker's lock + destroy "
    "(one default worker process of 10 threads draining them).",
    20_000,
    False,
    lambda jobs, peers: [Runner("conveyor", "", lambda ctx: run_db_cost(ctx, jobs))],
)
