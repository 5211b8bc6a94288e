"""Latency from the enqueue's COMMIT to the job's start: on an idle worker,
and for urgent jobs while the worker is busy with a backlog."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psycopg

from .. import recorder
from ..procs import WorkerProcesses
from ..results import Measurement, summarize_latencies
from ..systems import ConveyorSystem, System
from .base import Context, Runner, RunResult, Scenario

__all__ = ["LATENCY_IDLE", "LATENCY_URGENT", "run_latency"]


def _wait_records(
    folder: Path, want: set[int], timeout: float, workers: WorkerProcesses
) -> dict[int, float]:
    deadline = time.monotonic() + timeout
    seen: dict[int, float] = {}
    while time.monotonic() < deadline:
        seen = {}
        for seq, started in recorder.read_records(folder):
            seen.setdefault(seq, started)
        if want <= seen.keys():
            return seen
        workers.check()
        time.sleep(0.05)
    return seen


def run_latency(
    ctx: Context,
    system: System,
    count: int,
    rate: float,
    threads: int = 0,
    priority: int | None = None,
    backlog: Callable[[str], int] | None = None,
    backlog_left: Callable[[psycopg.Connection[Any]], int] | None = None,
    options: Sequence[str] = (),
    variant: str = "",
) -> RunResult:
    """Start a worker, then enqueue ``count`` jobs at ``rate`` per second, one
    transaction each, noting the time each COMMIT returned; each job notes
    its start time. Latency = start - commit (same machine clock)."""
    with ctx.server.fresh(system.schema, system.install) as url:
        backlog_jobs = backlog(url) if backlog is not None else 0
        records_dir = ctx.new_dir(f"{system.name}-records")
        argv, env = system.worker_command(url, threads)
        argv += list(options)
        env[recorder.ENV] = str(records_dir)
        committed: dict[int, float] = {}
        with (
            WorkerProcesses(argv, env, 1, ctx.new_dir("logs"), system.name) as workers,
            system.enqueuer(url) as enqueue,
        ):
            # Warm up: the worker is up, listening, and has run a job.
            enqueue(0, priority=priority)
            if 0 not in _wait_records(records_dir, {0}, 60.0, workers):
                raise TimeoutError(f"{system.name}: the warm-up job did not run within 60 s")
            time.sleep(0.5)
            start = time.perf_counter()
            for seq in range(1, count + 1):
                delay = start + (seq - 1) / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                enqueue(seq, priority=priority)
                committed[seq] = time.time()
            started = _wait_records(records_dir, set(committed), 30.0, workers)
            left = None
            if backlog_left is not None:
                with psycopg.connect(url, autocommit=True) as conn:
                    left = backlog_left(conn)
    latencies = [started[seq] - committed[seq] for seq in committed if seq in started]
    lost = len(committed) - len(latencies)
    stats = summarize_latencies(latencies)
    measurements = [
        Measurement(system.name, name, stats[name], "ms", variant, higher_is_better=False)
        for name in ("p50", "p95", "p99", "max")
    ]
    details: dict[str, Any] = {"jobs": count, "rate_per_s": rate, "not_started": lost, **stats}
    if backlog is not None:
        details["backlog_jobs"] = backlog_jobs
        details["backlog_left_at_end"] = left
        details["load_held"] = bool(left)
    if lost:
        raise RuntimeError(f"{system.name}: {lost} of {count} jobs did not start within 30 s")
    summary = f"p50 {stats['p50']:.2f} ms, p99 {stats['p99']:.2f} ms, max {stats['max']:.2f} ms"
    if backlog is not None:
        summary += f", backlog left {left:,}" if left is not None else ""
    return RunResult(measurements, details, [s * 1000 for s in latencies], summary)


def _latency_idle(jobs: int, peers: Sequence[System]) -> list[Runner]:
    return [
        Runner(s.name, "", functools.partial(run_latency, system=s, count=300, rate=50.0))
        for s in (ConveyorSystem(), *peers)
    ]


URGENT_BACKLOG = 60_000
URGENT_JOB_MS = 1.0


def _seed_sleep_backlog(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        with conn.transaction():
            conn.execute("SET LOCAL conveyor.notify = off")
            conn.execute(
                "INSERT INTO conveyor.jobs (job_class, args, priority)"
                " SELECT 'BenchSleep', jsonb_build_array(%s::float8), 100"
                " FROM generate_series(1, %s)",
                [URGENT_JOB_MS, URGENT_BACKLOG],
            )
        conn.execute("VACUUM ANALYZE conveyor.jobs")
    return URGENT_BACKLOG


def _sleep_backlog_left(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "SELECT count(*) FROM conveyor.jobs WHERE job_class = 'BenchSleep'"
    ).fetchone()
    return int(row[0]) if row else 0


#: Que's fixed buffer, for the adaptive default's paired comparison.
QUE_BUFFER = ("--maximum-buffer-size", "8", "--minimum-buffer-size", "2")


def _latency_urgent(jobs: int, peers: Sequence[System]) -> list[Runner]:
    def runner(variant: str, options: Sequence[str]) -> Runner:
        def run(ctx: Context) -> RunResult:
            return run_latency(
                ctx,
                ConveyorSystem(),
                count=200,
                rate=20.0,
                priority=1,
                backlog=_seed_sleep_backlog,
                backlog_left=_sleep_backlog_left,
                options=options,
                variant=variant,
            )

        return Runner("conveyor", variant, run)

    return [runner("", ()), runner("buffer 8/2", QUE_BUFFER)]


LATENCY_IDLE = Scenario(
    "latency_idle",
    "5. latency on an idle worker",
    "An idle worker (default settings); 300 jobs enqueued at 50/s, one per "
    "transaction; time from the enqueue COMMIT returning to the job's start.",
    None,
    True,
    _latency_idle,
)

LATENCY_URGENT = Scenario(
    "latency_urgent_under_load",
    "6. urgent latency under load",
    f"conveyor worker with default priorities (10,30,50,any,any,any) busy with a "
    f"backlog of {URGENT_BACKLOG:,} priority-100 jobs of {URGENT_JOB_MS:g} ms each; "
    "200 priority-1 jobs arrive at 20/s; their enqueue-to-start latency.",
    None,
    False,
    _latency_urgent,
)
