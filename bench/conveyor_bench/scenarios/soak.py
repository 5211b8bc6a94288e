"""The soak: hours of production in minutes. Its own throwaway cluster with
autovacuum on (the server's defaults, the table's own aggressive settings
from the schema, as docs/operations.md describes) and function timing on;
a steady enqueue at a fixed rate from another process, worked by 2 worker
processes with default options, and a burst halfway. Every 10 s: table and
index sizes, dead tuples, autovacuum runs, lock_jobs calls and time per call
(pg_stat_user_functions); afterwards, enqueue->start latency per 10 s of
enqueue time, and every job checked to have run exactly once."""

from __future__ import annotations

import itertools
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from .. import recorder
from ..cluster import Cluster
from ..procs import WorkerProcesses
from ..results import Measurement
from ..systems import ConveyorSystem, subprocess_env
from .base import Context, Runner, RunResult, Scenario

__all__ = ["SOAK", "SOAK_SHORT", "run_soak"]

#: Seconds between two samples of the server's figures.
SAMPLE_EVERY = 10.0
#: Burst jobs are numbered from here, apart from the steady ones.
BURST_BASE = 100_000_000

#: The server's defaults but for autovacuum on with a short naptime (the table's
#: own settings come with the schema; docs/performance.md "Tuning" recommends
#: both) and function timing, for lock_jobs' time per call.
SERVER_SETTINGS = {
    "autovacuum": "on",
    "autovacuum_naptime": "'10s'",
    "track_functions": "'pl'",
    "max_connections": "100",
    "shared_buffers": "128MB",
}

_SAMPLE = """
SELECT pg_relation_size('conveyor.jobs'), pg_indexes_size('conveyor.jobs'),
       s.n_live_tup, s.n_dead_tup, s.autovacuum_count, s.autoanalyze_count,
       coalesce(f.calls, 0), coalesce(f.total_time, 0),
       (SELECT count(*) FROM conveyor.jobs)
  FROM pg_stat_user_tables AS s
  LEFT JOIN pg_stat_user_functions AS f
    ON f.schemaname = 'conveyor' AND f.funcname = 'lock_jobs'
 WHERE s.schemaname = 'conveyor' AND s.relname = 'jobs'
"""


def _sample(conn: psycopg.Connection[Any], t: float) -> dict[str, Any]:
    conn.execute("SELECT pg_stat_clear_snapshot()")
    row = conn.execute(_SAMPLE).fetchone()
    assert row is not None
    keys = (
        "table_bytes",
        "index_bytes",
        "live",
        "dead",
        "autovacuums",
        "autoanalyzes",
        "lock_calls",
        "lock_ms_total",
        "jobs",
    )
    return {"t": round(t, 1), **dict(zip(keys, (float(v) for v in row), strict=True))}


def _burst(url: str, jobs: int) -> float:
    start = time.monotonic()
    with psycopg.connect(url, autocommit=True) as conn:
        for first in range(0, jobs, 10_000):
            batch = [
                {"job_class": "BenchNoOp", "args": [BURST_BASE + s]}
                for s in range(first + 1, min(jobs, first + 10_000) + 1)
            ]
            conn.execute("SELECT count(*) FROM conveyor.enqueue_many(%s)", [Jsonb(batch)])
    return time.monotonic() - start


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def run_soak(ctx: Context, seconds: float, rate: float, burst: int, workers: int = 2) -> RunResult:
    """Run the soak on its own cluster; see the module's docs."""
    system = ConveyorSystem()
    with (
        Cluster(SERVER_SETTINGS) as cluster,
        psycopg.connect(cluster.admin_url, autocommit=True) as admin,
    ):
        admin.execute("CREATE DATABASE soak")
        url = cluster.admin_url.rsplit("/", 1)[0] + "/soak"
        system.install(url)
        records_dir = ctx.new_dir("soak-records")
        enqueued_file = ctx.new_dir("soak-enqueuer") / "enqueued.txt"
        argv, env = system.worker_command(url, 0)  # default threads and buffer
        env[recorder.ENV] = str(records_dir)
        procs = WorkerProcesses(argv, env, workers, ctx.new_dir("logs"), "conveyor")
        samples: list[dict[str, Any]] = []
        burst_seconds = None
        with psycopg.connect(url, autocommit=True) as mon:
            procs.start()
            time.sleep(2)  # the workers connect
            enqueuer = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "conveyor_bench.soak_enqueuer",
                    url,
                    str(rate),
                    str(seconds),
                    str(enqueued_file),
                ],
                env=subprocess_env({}),
            )
            try:
                t0 = time.monotonic()
                next_sample = t0
                while enqueuer.poll() is None or time.monotonic() - t0 < seconds:
                    now = time.monotonic()
                    if burst and burst_seconds is None and now - t0 >= seconds / 2:
                        burst_seconds = _burst(url, burst)
                        ctx.say(f"burst of {burst:,} enqueued in {burst_seconds:.1f} s")
                    if now >= next_sample:
                        samples.append(_sample(mon, now - t0))
                        next_sample += SAMPLE_EVERY
                    procs.check()
                    time.sleep(0.2)
                steady = int(seconds * rate)
                deadline = time.monotonic() + max(120.0, burst / 2000)
                while time.monotonic() < deadline:
                    if mon.execute("SELECT count(*) FROM conveyor.jobs").fetchone() == (0,):
                        break
                    if time.monotonic() >= next_sample:
                        samples.append(_sample(mon, time.monotonic() - t0))
                        next_sample += SAMPLE_EVERY
                    time.sleep(0.2)
                time.sleep(1)
                samples.append(_sample(mon, time.monotonic() - t0))
            finally:
                if enqueuer.poll() is None:
                    enqueuer.kill()
                enqueuer.wait()
                codes = procs.stop()
    return _result(
        seconds, rate, burst, steady, samples, enqueued_file, records_dir, codes, burst_seconds
    )


def _result(
    seconds: float,
    rate: float,
    burst: int,
    steady: int,
    samples: list[dict[str, Any]],
    enqueued_file: Path,
    records_dir: Path,
    codes: list[int | None],
    burst_seconds: float | None,
) -> RunResult:
    enqueued_at: dict[int, float] = {}
    for line in enqueued_file.read_text().splitlines():
        first, last, committed = line.split()
        for seq in range(int(first), int(last) + 1):
            enqueued_at[seq] = float(committed)
    records = recorder.read_records(records_dir)
    counts: dict[int, int] = {}
    started: dict[int, float] = {}
    for seq, at in records:
        counts[seq] = counts.get(seq, 0) + 1
        started[seq] = at
    expected = set(enqueued_at) | {BURST_BASE + s for s in range(1, burst + 1)}
    duplicates = sum(c - 1 for c in counts.values() if c > 1)
    missing = len(expected - set(counts))
    t_first = min(enqueued_at.values()) if enqueued_at else 0.0
    windows: dict[int, list[float]] = {}
    for seq, at in enqueued_at.items():
        if seq in started:
            windows.setdefault(int((at - t_first) // SAMPLE_EVERY), []).append(
                (started[seq] - at) * 1000
            )
    latency = [
        {
            "t": (w + 1) * SAMPLE_EVERY,
            "jobs": len(v),
            "p50_ms": _pct(v, 0.5),
            "p99_ms": _pct(v, 0.99),
        }
        for w, v in sorted(windows.items())
    ]
    for prev, cur in itertools.pairwise(samples):
        calls = cur["lock_calls"] - prev["lock_calls"]
        cur["lock_ms_per_call"] = (
            (cur["lock_ms_total"] - prev["lock_ms_total"]) / calls if calls else None
        )
    minute = min(60.0, seconds / 3)

    def over(rows: list[dict[str, Any]], key: str, first: bool) -> float | None:
        if first:
            chosen = [r[key] for r in rows if r["t"] <= minute and r.get(key) is not None]
        else:
            chosen = [
                r[key]
                for r in rows
                if seconds - minute < r["t"] <= seconds and r.get(key) is not None
            ]
        return statistics.median(chosen) if chosen else None

    figures = {
        "p99_first_ms": over(latency, "p99_ms", True),
        "p99_last_ms": over(latency, "p99_ms", False),
        "lock_ms_first": over(samples, "lock_ms_per_call", True),
        "lock_ms_last": over(samples, "lock_ms_per_call", False),
    }
    # "Start" is the largest size before the burst (the first samples are of
    # an empty table), so end/start says whether the burst's space came back.
    before = [s for s in samples if s["t"] < seconds / 2] or samples[:1]

    def start_peak_end(key: Callable[[dict[str, Any]], float]) -> tuple[float, float, float]:
        return max(map(key, before)), max(map(key, samples)), key(samples[-1])

    start_size, peak_size, end_size = start_peak_end(lambda s: s["table_bytes"] + s["index_bytes"])
    index_sizes = start_peak_end(lambda s: s["index_bytes"])

    def ratio(a: float | None, b: float | None) -> float | None:
        return None if not a or b is None else b / a

    p99_ratio = ratio(figures["p99_first_ms"], figures["p99_last_ms"])
    lock_ratio = ratio(figures["lock_ms_first"], figures["lock_ms_last"])
    details = {
        "seconds": seconds,
        "rate": rate,
        "burst": burst,
        "steady_jobs": steady,
        "burst_enqueue_seconds": burst_seconds,
        "server_settings": SERVER_SETTINGS,
        "exactly_once": duplicates == 0 and missing == 0,
        "duplicates": duplicates,
        "missing": missing,
        "exit_codes": codes,
        "latency_per_10s": latency,
        "samples": samples,
        **figures,
        "p99_last_over_first": p99_ratio,
        "lock_last_over_first": lock_ratio,
        "size_bytes_start_peak_end": [start_size, peak_size, end_size],
        "index_bytes_start_peak_end": list(index_sizes),
    }
    measurements = [
        Measurement(
            "conveyor",
            "soak p99 last/first minute",
            p99_ratio or float("nan"),
            "x",
            higher_is_better=False,
        ),
        Measurement(
            "conveyor",
            "soak lock_jobs ms last/first minute",
            lock_ratio or float("nan"),
            "x",
            higher_is_better=False,
        ),
        Measurement(
            "conveyor",
            "soak size end/before the burst",
            end_size / start_size,
            "x",
            higher_is_better=False,
        ),
        Measurement(
            "conveyor",
            "soak index size end/before the burst",
            index_sizes[2] / index_sizes[0],
            "x",
            higher_is_better=False,
        ),
    ]
    ok = (
        "exactly once"
        if details["exactly_once"]
        else f"NOT exactly once ({missing} missing, {duplicates} duplicates)"
    )
    summary = (
        f"p99 {figures['p99_first_ms']} -> {figures['p99_last_ms']} ms, lock_jobs "
        f"{figures['lock_ms_first']} -> {figures['lock_ms_last']} ms/call, size "
        f"{start_size / 1e6:.1f} -> peak {peak_size / 1e6:.1f} -> {end_size / 1e6:.1f} MB "
        f"(indexes {' -> '.join(f'{b / 1e6:.1f}' for b in index_sizes)}), {ok}"
    )
    return RunResult(measurements, details, summary=summary)


def _soak(seconds: float, rate: float, burst: int) -> Any:
    def build(jobs: int, peers: Any) -> list[Runner]:
        return [
            Runner("conveyor", f"{seconds:.0f} s", lambda ctx: run_soak(ctx, seconds, rate, burst))
        ]

    return build


SOAK = Scenario(
    "soak",
    "soak: 10 minutes, autovacuum on, steady enqueue and a burst",
    "Its own cluster (autovacuum on, track_functions = pl); 2,000 jobs/s enqueued "
    "from another process for 600 s, 2 worker processes with default options, "
    "200,000 jobs enqueued at once halfway; figures every 10 s.",
    None,
    False,
    _soak(600.0, 2000.0, 200_000),
)

SOAK_SHORT = Scenario(
    "soak_short",
    "soak, short form: 60 s",
    "The soak for 60 s at 1,000 jobs/s with a burst of 20,000 halfway.",
    None,
    False,
    _soak(60.0, 1000.0, 20_000),
)
