"""Draining a backlog with worker processes: one process (the drain), 1, 2
and 4 processes (drain_scaling), and one long drain watched for memory
(worker_memory). Every drain checks that each job ran exactly once."""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from typing import Any

import psycopg

from .. import recorder
from ..procs import WorkerProcesses
from ..results import Measurement
from ..systems import ConveyorSystem, System
from .base import Context, Runner, RunResult, Scenario, fmt_rate, throughput

__all__ = [
    "DRAIN",
    "DRAIN_SCALING",
    "DRAIN_TUNED",
    "DRAIN_TUNED_VARIANT",
    "WORKER_MEMORY",
    "run_drain",
    "verify_exactly_once",
]

_BLOCKED = (
    "SELECT count(*) FROM pg_stat_activity"
    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    " AND pid <> pg_backend_pid()"
)


def verify_exactly_once(
    conn: psycopg.Connection[Any], records: Sequence[tuple[int, float]], jobs: int
) -> dict[str, Any]:
    """Load the jobs' records into the run's database and check there that
    jobs 1..N each ran exactly once."""
    conn.execute("CREATE TABLE bench_ran (seq bigint NOT NULL, started_at double precision)")
    with conn.cursor().copy("COPY bench_ran (seq, started_at) FROM STDIN") as copy:
        for record in records:
            copy.write_row(record)
    row = conn.execute(
        """
        SELECT count(*),
               count(DISTINCT seq),
               count(*) FILTER (WHERE seq NOT BETWEEN 1 AND %(n)s),
               (SELECT count(*) FROM generate_series(1, %(n)s) AS g(seq)
                 WHERE NOT EXISTS (SELECT FROM bench_ran AS r WHERE r.seq = g.seq))
          FROM bench_ran
        """,
        {"n": jobs},
    ).fetchone()
    assert row is not None
    ran, distinct, unexpected, missing = (int(v) for v in row)
    return {
        "jobs": jobs,
        "ran": ran,
        "distinct": distinct,
        "duplicates": ran - distinct,
        "missing": missing,
        "unexpected": unexpected,
        "exactly_once": ran == jobs and distinct == jobs and missing == 0 and unexpected == 0,
    }


def _wait_blocked(
    conn: psycopg.Connection[Any], want: int, workers: WorkerProcesses, timeout: float
) -> bool:
    """Wait until ``want`` sessions wait for the gate's lock (every worker is up)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers.check()
        row = conn.execute(_BLOCKED).fetchone()
        if row and row[0] >= want:
            return True
        time.sleep(0.02)
    return False


def run_drain(
    ctx: Context,
    system: System,
    jobs: int,
    processes: int = 1,
    threads: int = 10,
    rss_every: float = 0.1,
    options: Sequence[str] = (),
    variant: str = "",
) -> RunResult:
    """Enqueue ``jobs`` no-op jobs, start the workers, time the drain, verify.

    The clock starts when every worker process is up: while they start, the
    benchmark holds an ACCESS EXCLUSIVE lock on the queue table, and opens
    this gate once each process is blocked on it. Interpreter start-up and
    imports, which differ between systems and do not depend on the queue,
    are thus left out for every system alike. The clock stops when the
    queue has no job left to work: once the jobs' records say every job has
    started, the database is asked every 2 ms.
    """
    seqs = list(range(1, jobs + 1))
    with ctx.server.fresh(system.schema, system.install) as url:
        system.seed(url, seqs)
        records_dir = ctx.new_dir(f"{system.name}-records")
        with psycopg.connect(url, autocommit=True) as mon:
            mon.execute(f"VACUUM ANALYZE {system.queue_table}")
            argv, env = system.worker_command(url, threads)
            argv += list(options)
            env[recorder.ENV] = str(records_dir)
            workers = WorkerProcesses(argv, env, processes, ctx.new_dir("logs"), system.name)
            rss: list[tuple[float, list[int | None]]] = []
            with psycopg.connect(url) as gate:
                gate.execute(f"LOCK TABLE {system.queue_table} IN ACCESS EXCLUSIVE MODE")
                try:
                    workers.start()
                    ready = _wait_blocked(mon, processes, workers, timeout=60)
                    startup = time.time() - workers.started_at
                    rss.append((0.0, workers.rss_kib()))
                    t0 = time.time()
                    gate.commit()
                    timeout = max(300.0, jobs / 50)
                    expected = recorder.expected_size(range(1, jobs + 1))
                    next_rss = next_db = t0
                    while True:
                        # Watch the jobs' records (a stat() per file, no load on
                        # the database); ask the database once they are all in,
                        # and twice a second in case some job never runs.
                        now = time.time()
                        if now >= next_db or recorder.records_size(records_dir) >= expected:
                            row = mon.execute(system.drained_sql).fetchone()
                            now = time.time()
                            if row and row[0]:
                                t1 = now
                                break
                            next_db = now + 0.5
                        if now - t0 > timeout:
                            raise TimeoutError(
                                f"{system.name} did not drain {jobs} jobs in {timeout:.0f} s"
                            )
                        if now >= next_rss:
                            workers.check()
                            rss.append((now - t0, workers.rss_kib()))
                            next_rss = now + rss_every
                        time.sleep(0.002)
                    rss.append((t1 - t0, workers.rss_kib()))
                finally:
                    codes = workers.stop()
            records = recorder.read_records(records_dir)
            verification = verify_exactly_once(mon, records, jobs)
            left = mon.execute(system.drained_sql).fetchone()
    seconds = t1 - t0
    starts = sorted(started - t0 for _, started in records)
    # Jobs started in each second of the drain: shows stalls (a tail that
    # waits for a poll) that a mean rate hides.
    per_second = [0] * (int(seconds) + 1)
    for offset in starts:
        per_second[min(max(int(offset), 0), len(per_second) - 1)] += 1
    m = throughput(system.name, jobs, seconds, variant)
    totals = [sum(v or 0 for v in sample) for _, sample in rss]
    peak_mb = max(totals) / 1024 if totals else float("nan")
    details = {
        "jobs": jobs,
        "processes": processes,
        "threads_per_process": threads,
        "worker_command": argv,
        "seconds": seconds,
        "gate": "all workers blocked on the gate" if ready else "gate opened after 60 s timeout",
        "startup_seconds": startup,
        "verification": verification,
        "first_job_started_s": starts[0] if starts else None,
        "last_job_started_s": starts[-1] if starts else None,
        "jobs_started_per_second": per_second,
        "queue_drained": bool(left and left[0]),
        "exit_codes": codes,
        "rss_mb_peak_all_processes": peak_mb,
        "rss_mb_samples": [
            (round(t, 3), [None if v is None else round(v / 1024, 2) for v in s]) for t, s in rss
        ],
    }
    measurements = [
        m,
        Measurement(
            system.name,
            "worker RSS peak",
            peak_mb / processes,
            "MB",
            m.variant,
            higher_is_better=False,
        ),
    ]
    ok = "exactly once" if verification["exactly_once"] else "NOT exactly once"
    return RunResult(
        measurements,
        details,
        summary=f"{fmt_rate(m.value)}, {ok}, RSS {peak_mb / processes:.0f} MB",
    )


#: conveyor's drain with Que's buffer defaults (8 jobs at most, refill below 2)
#: and with the buffer docs/performance.md recommends for short jobs: the
#: drain is bound by jobs per locker round trip. Since lock_jobs and the
#: releases test held ids by binary search, a cycle's server cost stays flat
#: per job as batches grow, so 2,000 beats 500 (45,000 against 27,000 jobs/s
#: for 200,000 jobs in an interleaved A/B); 5,000 gained nothing more.
DRAIN_TUNED = ("--maximum-buffer-size", "2000", "--minimum-buffer-size", "1000")
DRAIN_TUNED_VARIANT = "buffer 2000/1000"


def _drain(jobs: int, peers: Sequence[System]) -> list[Runner]:
    conveyor = ConveyorSystem()
    return [
        Runner("conveyor", "", lambda ctx: run_drain(ctx, conveyor, jobs)),
        Runner(
            "conveyor",
            DRAIN_TUNED_VARIANT,
            lambda ctx: run_drain(
                ctx, conveyor, jobs, options=DRAIN_TUNED, variant=DRAIN_TUNED_VARIANT
            ),
        ),
        *(Runner(s.name, "", functools.partial(run_drain, system=s, jobs=jobs)) for s in peers),
    ]


def _drain_scaling(jobs: int, peers: Sequence[System]) -> list[Runner]:
    def runner(processes: int) -> Runner:
        def run(ctx: Context) -> RunResult:
            return run_drain(
                ctx, ConveyorSystem(), jobs, processes=processes, variant=_procs(processes)
            )

        return Runner("conveyor", _procs(processes), run)

    return [runner(p) for p in (1, 2, 4)]


#: drain_processes: the same 8 worker threads split over 1, 2 and 4 processes.
EQUAL_THREADS = 8


def _drain_processes(jobs: int, peers: Sequence[System]) -> list[Runner]:
    def runner(processes: int) -> Runner:
        threads = EQUAL_THREADS // processes
        variant = f"{_procs(processes)} x {threads} threads"

        def run(ctx: Context) -> RunResult:
            return run_drain(
                ctx, ConveyorSystem(), jobs, processes=processes, threads=threads, variant=variant
            )

        return Runner("conveyor", variant, run)

    return [runner(p) for p in (1, 2, 4)]


def _procs(processes: int) -> str:
    return f"{processes} process" + ("es" if processes > 1 else "")


def _worker_memory(jobs: int, peers: Sequence[System]) -> list[Runner]:
    def run(ctx: Context) -> RunResult:
        result = run_drain(ctx, ConveyorSystem(), jobs, rss_every=0.25)
        samples = [(t, s[0]) for t, s in result.details["rss_mb_samples"] if s and s[0] is not None]
        if len(samples) < 2:
            raise RuntimeError("no RSS samples: /proc/<pid>/status is not readable here")
        duration = samples[-1][0]
        early = [mb for t, mb in samples if t >= 0.1 * duration] or [samples[-1][1]]
        start_mb, end_mb, peak_mb = early[0], samples[-1][1], max(mb for _, mb in samples)
        growth = end_mb - start_mb
        result.measurements = [
            result.measurements[0],
            Measurement("conveyor", "RSS at start", samples[0][1], "MB", higher_is_better=False),
            Measurement("conveyor", "RSS peak", peak_mb, "MB", higher_is_better=False),
            Measurement("conveyor", "RSS growth after 10%", growth, "MB", higher_is_better=False),
        ]
        result.summary = (
            f"{result.measurements[0].value:,.0f} jobs/s, RSS {samples[0][1]:.1f}"
            f" -> peak {peak_mb:.1f} MB, growth after 10% {growth:+.1f} MB"
        )
        return result

    return [Runner("conveyor", "", run)]


DRAIN = Scenario(
    "drain",
    "3. drain: one worker process, 10 threads",
    "N no-op jobs enqueued beforehand, then one worker process with 10 worker "
    "threads (conveyor -w 10 with default buffer sizes, and with "
    + " ".join(DRAIN_TUNED)
    + "; procrastinate --concurrency 10; PgQueuer its "
    "defaults); jobs/s from the moment the worker is up to the last job resolved; "
    "every job checked in the database to have run exactly once.",
    20_000,
    True,
    _drain,
)

DRAIN_SCALING = Scenario(
    "drain_scaling",
    "4. drain with 1, 2 and 4 worker processes",
    "The drain with 1, 2 and 4 conveyor worker processes of 10 threads each "
    "(default buffer sizes), started in the benchmark's session (one scheduling "
    "group under Linux autogroup, as under one process manager).",
    100_000,
    False,
    _drain_scaling,
)

DRAIN_PROCESSES = Scenario(
    "drain_processes",
    "4b. drain with the same threads in 1, 2 and 4 processes",
    f"The drain with {EQUAL_THREADS} worker threads in all: 1 process of "
    f"{EQUAL_THREADS}, 2 of {EQUAL_THREADS // 2}, 4 of {EQUAL_THREADS // 4} "
    "(default buffer sizes): what splitting the same threads into more "
    "processes costs.",
    100_000,
    False,
    _drain_processes,
)

WORKER_MEMORY = Scenario(
    "worker_memory",
    "worker memory across a long drain",
    "RSS of one conveyor worker process (10 threads) sampled every 0.25 s while it drains N jobs.",
    200_000,
    False,
    _worker_memory,
)
