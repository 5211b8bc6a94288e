"""The benchmark scenarios: issue 5's list, issue 4's worker memory, and the
SQL functions' own cost next to bare SQL.

Each scenario expands into *runners*: one per system (or per variant, such as
a worker count or a backlog size). A runner does one complete run in a fresh
database and returns its figures; the orchestrator (:mod:`.runner`) repeats
the runners K times, interleaved.
"""

from __future__ import annotations

import functools
import json
import queue
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from .. import sql
from . import recorder
from .db import Server
from .procs import WorkerProcesses
from .results import Measurement, summarize_latencies
from .systems import ConveyorSystem, RawSystem, System

__all__ = ["SCENARIOS", "Context", "RunResult", "Runner", "Scenario"]


# --- plumbing ------------------------------------------------------------------------


@dataclass
class Context:
    """What a run needs from the orchestrator."""

    server: Server
    workdir: Path
    say: Callable[[str], None] = lambda text: None
    _dirs: int = 0

    def new_dir(self, name: str) -> Path:
        self._dirs += 1
        path = self.workdir / f"{self._dirs:03d}-{name}"
        path.mkdir(parents=True)
        return path


@dataclass
class RunResult:
    measurements: list[Measurement]
    details: dict[str, Any] = field(default_factory=dict)
    #: Raw latencies of this run in ms (latency scenarios), for the plots.
    latencies_ms: list[float] | None = None
    #: A few words for the progress line.
    summary: str = ""


@dataclass
class Runner:
    system: str
    variant: str
    run: Callable[[Context], RunResult]

    @property
    def label(self) -> str:
        return f"{self.system} {self.variant}".strip()


@dataclass
class Scenario:
    name: str
    title: str
    description: str
    #: Jobs per run when --jobs is not given; None: --jobs does not apply.
    default_jobs: int | None
    #: Whether the --compare peers take part.
    with_peers: bool
    build: Callable[[int, Sequence[System]], list[Runner]]

    def runners(self, jobs: int, peers: Sequence[System]) -> list[Runner]:
        return self.build(jobs, peers if self.with_peers else [])


def _throughput(system: str, jobs: int, seconds: float, variant: str = "") -> Measurement:
    return Measurement(system, "throughput", jobs / seconds, "jobs/s", variant)


def _fmt_rate(value: float) -> str:
    return f"{value:,.0f} jobs/s"


# --- 1, 2: enqueue ---------------------------------------------------------------------


def _enqueue_runner(system: System, jobs: int, batch: int | None) -> Runner:
    def run(ctx: Context) -> RunResult:
        seqs = list(range(1, jobs + 1))
        with ctx.server.fresh(system.schema, system.install) as url:
            if batch is None:
                seconds = system.enqueue_single(url, seqs)
            else:
                seconds = system.enqueue_bulk(url, seqs, batch)
            with psycopg.connect(url, autocommit=True) as conn:
                row = conn.execute(system.count_sql).fetchone()
        stored = int(row[0]) if row else -1
        if stored != jobs:
            raise RuntimeError(f"{system.name} stored {stored} jobs instead of {jobs}")
        m = _throughput(system.name, jobs, seconds)
        details = {"jobs": jobs, "seconds": seconds, "us_per_job": seconds / jobs * 1e6}
        if batch is not None:
            details["batch"] = batch
        return RunResult([m], details, summary=_fmt_rate(m.value))

    return Runner(system.name, "", run)


def _enqueue_single(jobs: int, peers: Sequence[System]) -> list[Runner]:
    return [_enqueue_runner(s, jobs, None) for s in (ConveyorSystem(), RawSystem(), *peers)]


def _enqueue_bulk(jobs: int, peers: Sequence[System]) -> list[Runner]:
    return [_enqueue_runner(s, jobs, 1_000) for s in (ConveyorSystem(), RawSystem(), *peers)]


# --- 3, 4: drain -----------------------------------------------------------------------

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
    m = _throughput(system.name, jobs, seconds, variant)
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
        summary=f"{_fmt_rate(m.value)}, {ok}, RSS {peak_mb / processes:.0f} MB",
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


def _procs(processes: int) -> str:
    return f"{processes} process" + ("es" if processes > 1 else "")


# --- 5, 6: latency -----------------------------------------------------------------------


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
) -> RunResult:
    """Start a worker, then enqueue ``count`` jobs at ``rate`` per second, one
    transaction each, noting the time each COMMIT returned; each job notes
    its start time. Latency = start - commit (same machine clock)."""
    with ctx.server.fresh(system.schema, system.install) as url:
        backlog_jobs = backlog(url) if backlog is not None else 0
        records_dir = ctx.new_dir(f"{system.name}-records")
        argv, env = system.worker_command(url, threads)
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
        Measurement(system.name, name, stats[name], "ms", higher_is_better=False)
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


def _latency_urgent(jobs: int, peers: Sequence[System]) -> list[Runner]:
    def run(ctx: Context) -> RunResult:
        return run_latency(
            ctx,
            ConveyorSystem(),
            count=200,
            rate=20.0,
            priority=1,
            backlog=_seed_sleep_backlog,
            backlog_left=_sleep_backlog_left,
        )

    return [Runner("conveyor", "", run)]


# --- 7: backlog scaling ------------------------------------------------------------------

# Both pass `held`, the jobs the session holds, as conveyor's locker does: a
# caller that keeps count spares each call a pg_locks read.
_LOCK = (
    "SELECT id FROM conveyor.lock_jobs(queues => '{default}', max_jobs => %s, held => %s::bigint[])"
)
_DESTROY = "SELECT conveyor.destroy_jobs(%s::bigint[], held => %s::bigint[])"
_SEED_READY = (
    "INSERT INTO conveyor.jobs (job_class, args)"
    " SELECT 'BenchNoOp', jsonb_build_array(g) FROM generate_series(1, %s) AS g"
)
_SEED_FINISHED = (
    "INSERT INTO conveyor.jobs (job_class, args, finished_at)"
    " SELECT 'BenchNoOp', jsonb_build_array(g), now() FROM generate_series(1, %s) AS g"
)


def seed_jobs(conn: psycopg.Connection[Any], ready: int, finished: int = 0) -> None:
    """Insert ready (and finished) jobs fast, with NOTIFY off, then VACUUM ANALYZE."""
    with conn.transaction():
        conn.execute("SET LOCAL conveyor.notify = off")
        if finished:
            conn.execute(_SEED_FINISHED, [finished])
        if ready:
            conn.execute(_SEED_READY, [ready])
    conn.execute("VACUUM ANALYZE conveyor.jobs")


def run_backlog(
    ctx: Context,
    ready: int,
    finished: int,
    destroyed: int = 0,
    cycles: int = 200,
    batch: int = 100,
) -> RunResult:
    """The cost of one lock_jobs(max_jobs => 100) + destroy_jobs cycle with
    this backlog. After each timed cycle, 100 new ready jobs replace the
    destroyed ones (not timed), so the backlog stays the same size.

    ``destroyed``: that many jobs, older than the ready ones, are deleted
    after the seeding's VACUUM and not vacuumed away: the state between two
    vacuums after a burst, when their dead entries still sit at the head of
    jobs_ready_idx. The warm-up cycles pay for marking them dead; the timed
    ones still step over their pages.

    The session runs with synchronous_commit = off: the WAL flush of the
    destroy's commit costs the same whatever the backlog, and on a shared
    disk it is the noisiest part of the cycle; what is measured is the work
    of the two statements."""
    system = ConveyorSystem()
    with (
        ctx.server.fresh(system.schema, system.install) as url,
        psycopg.connect(url, autocommit=True) as conn,
    ):
        t = time.perf_counter()
        if destroyed:
            with conn.transaction():
                conn.execute("SET LOCAL conveyor.notify = off")
                conn.execute(_SEED_READY, [destroyed])
        seed_jobs(conn, ready, finished)
        if destroyed:
            conn.execute(
                "DELETE FROM conveyor.jobs WHERE id IN"
                " (SELECT id FROM conveyor.jobs ORDER BY id LIMIT %s)",
                [destroyed],
            )
        seed_seconds = time.perf_counter() - t
        conn.execute("SET conveyor.notify = off")
        conn.execute("SET synchronous_commit = off")
        locks: list[float] = []
        destroys: list[float] = []
        for i in range(cycles + 5):
            t = time.perf_counter()
            ids = [r[0] for r in conn.execute(_LOCK, [batch, []]).fetchall()]
            t_locked = time.perf_counter()
            conn.execute(_DESTROY, [ids, ids]).fetchall()
            t_destroyed = time.perf_counter()
            if len(ids) != batch:
                raise RuntimeError(f"lock_jobs locked {len(ids)} jobs, not {batch}")
            if i >= 5:  # the first cycles warm the caches
                locks.append(t_locked - t)
                destroys.append(t_destroyed - t_locked)
            conn.execute(
                "INSERT INTO conveyor.jobs (job_class, args)"
                " SELECT 'BenchNoOp', '[0]' FROM generate_series(1, %s)",
                [batch],
            )
    lock_ms = statistics.median(locks) * 1000
    destroy_ms = statistics.median(destroys) * 1000
    cycle_ms = statistics.median(a + b for a, b in zip(locks, destroys, strict=True)) * 1000
    variant = _backlog_variant(ready, finished, destroyed)
    measurements = [
        Measurement("conveyor", name, value, "ms", variant, higher_is_better=False)
        for name, value in (
            ("lock+destroy 100", cycle_ms),
            ("lock_jobs 100", lock_ms),
            ("destroy_jobs 100", destroy_ms),
        )
    ]
    details = {
        "ready": ready,
        "finished": finished,
        "destroyed_not_vacuumed": destroyed,
        "cycles": cycles,
        "batch": batch,
        "seed_seconds": seed_seconds,
        "cycle_ms_median": cycle_ms,
        "lock_ms_median": lock_ms,
        "lock_ms_min": min(locks) * 1000,
        "lock_ms_max": max(locks) * 1000,
        "destroy_ms_median": destroy_ms,
        "destroy_ms_min": min(destroys) * 1000,
        "destroy_ms_max": max(destroys) * 1000,
        "us_per_job": cycle_ms * 1000 / batch,
    }
    summary = (
        f"{cycle_ms:.2f} ms per cycle of {batch} (lock {lock_ms:.2f}, destroy {destroy_ms:.2f})"
    )
    return RunResult(measurements, details, summary=summary)


def _backlog_variant(ready: int, finished: int, destroyed: int = 0) -> str:
    text = f"{ready:,} ready"
    if finished:
        text += f" + {finished:,} finished"
    if destroyed:
        text += f" after {destroyed:,} destroyed, not vacuumed"
    return text


#: (ready, finished, destroyed and not vacuumed). The last case has no goal:
#: it shows what the time between two vacuums costs after a burst.
BACKLOG_CASES = (
    (1_000, 0, 0),
    (100_000, 0, 0),
    (1_000_000, 0, 0),
    (1_000, 1_000_000, 0),
    (1_000, 0, 1_000_000),
)


def _backlog_scaling(jobs: int, peers: Sequence[System]) -> list[Runner]:
    return [
        Runner(
            "conveyor",
            _backlog_variant(r, f, d),
            functools.partial(run_backlog, ready=r, finished=f, destroyed=d),
        )
        for r, f, d in BACKLOG_CASES
    ]


# --- 8: the raw ceiling ------------------------------------------------------------------

_SKIP_LOCKED = """
DELETE FROM conveyor.jobs
 WHERE id IN (SELECT id FROM conveyor.jobs
               WHERE queue = 'default' AND finished_at IS NULL AND expired_at IS NULL
                 AND run_at <= now()
               ORDER BY priority, run_at, id
               LIMIT %s
                 FOR UPDATE SKIP LOCKED)
RETURNING id
"""


def _raw_insert(jobs: int) -> Callable[[Context], RunResult]:
    def run(ctx: Context) -> RunResult:
        result = _enqueue_runner(RawSystem(), jobs, None).run(ctx)
        for m in result.measurements:
            m.variant = "INSERT, 1 row per transaction"
        return result

    return run


def _skip_locked(
    jobs: int, per_statement: int, clients: int = 10
) -> Callable[[Context], RunResult]:
    def run(ctx: Context) -> RunResult:
        system = ConveyorSystem()
        with ctx.server.fresh(system.schema, system.install) as url:
            with psycopg.connect(url, autocommit=True) as conn:
                seed_jobs(conn, jobs)
            conns = [psycopg.connect(url, autocommit=True) for _ in range(clients)]
            counts = [0] * clients
            errors: list[BaseException] = []
            barrier = threading.Barrier(clients + 1)

            def client(i: int) -> None:
                conn = conns[i]
                try:
                    barrier.wait()
                    while True:
                        rows = conn.execute(_SKIP_LOCKED, [per_statement]).fetchall()
                        if not rows:
                            # Others may hold the last rows: done only when none is left.
                            row = conn.execute(
                                "SELECT EXISTS (SELECT FROM conveyor.jobs)"
                            ).fetchone()
                            if not (row and row[0]):
                                return
                            continue
                        counts[i] += len(rows)
                except BaseException as error:  # reported below
                    errors.append(error)

            threads = [
                threading.Thread(target=client, args=(i,), name=f"bench-client-{i}")
                for i in range(clients)
            ]
            for thread in threads:
                thread.start()
            barrier.wait()
            t0 = time.perf_counter()
            for thread in threads:
                thread.join()
            seconds = time.perf_counter() - t0
            for conn in conns:
                conn.close()
        if errors:
            raise errors[0]
        if sum(counts) != jobs:
            raise RuntimeError(f"deleted {sum(counts)} jobs, not {jobs}")
        variant = f"SKIP LOCKED DELETE, {per_statement}/statement, {clients} clients"
        m = _throughput("raw", jobs, seconds, variant)
        return RunResult(
            [m],
            {"jobs": jobs, "seconds": seconds, "clients": clients, "per_statement": per_statement},
            summary=_fmt_rate(m.value),
        )

    return run


def run_advisory_loop(ctx: Context, jobs: int, threads: int = 10, batch: int = 100) -> RunResult:
    """The ceiling of conveyor's own design: one connection locks ``batch``
    jobs per conveyor.lock_jobs call, ``threads`` threads take them and do
    nothing, and the loop destroys (deletes + unlocks) finished ones in
    batches with conveyor.destroy_jobs. No buffer bounds, no logging, no
    error handling: only the round trips a worker cannot avoid."""
    system = ConveyorSystem()
    with ctx.server.fresh(system.schema, system.install) as url:
        with psycopg.connect(url, autocommit=True) as conn:
            seed_jobs(conn, jobs)
        todo: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        done: queue.SimpleQueue[int] = queue.SimpleQueue()

        def work() -> None:
            while (job := todo.get()) is not None:
                done.put(job)

        workers = [threading.Thread(target=work, name=f"bench-worker-{i}") for i in range(threads)]
        for w in workers:
            w.start()
        calls = {"lock": 0, "destroy": 0}
        with psycopg.connect(url, autocommit=True) as conn:
            try:
                t0 = time.perf_counter()
                holding: set[int] = set()
                resolved = 0
                while resolved < jobs:
                    if len(holding) < batch:
                        held = sql.ids(holding)
                        ids = [r[0] for r in conn.execute(_LOCK, [batch, held]).fetchall()]
                        calls["lock"] += 1
                        for job in ids:
                            todo.put(job)
                        holding.update(ids)
                        if not ids and not holding:
                            break
                    finished = [done.get(timeout=5.0)] if holding else []
                    while True:
                        try:
                            finished.append(done.get_nowait())
                        except queue.Empty:
                            break
                    if finished:
                        done_ids = sql.ids(finished)
                        conn.execute(_DESTROY, [done_ids, done_ids]).fetchall()
                        calls["destroy"] += 1
                        resolved += len(finished)
                        holding.difference_update(finished)
                seconds = time.perf_counter() - t0
            finally:
                for _ in workers:
                    todo.put(None)
                for w in workers:
                    w.join()
            row = conn.execute("SELECT count(*) FROM conveyor.jobs").fetchone()
    if resolved != jobs or (row and row[0]):
        raise RuntimeError(f"resolved {resolved} of {jobs} jobs, {row[0] if row else '?'} left")
    variant = f"advisory-lock loop, lock_jobs {batch}/call, {threads} threads, destroy_jobs batches"
    m = _throughput("raw", jobs, seconds, variant)
    details = {
        "jobs": jobs,
        "seconds": seconds,
        "threads": threads,
        "batch": batch,
        "lock_calls": calls["lock"],
        "destroy_calls": calls["destroy"],
        "mean_destroy_batch": jobs / max(1, calls["destroy"]),
    }
    return RunResult([m], details, summary=_fmt_rate(m.value))


ADVISORY_LOOP_VARIANT = "advisory-lock loop, lock_jobs 100/call, 10 threads, destroy_jobs batches"


def _raw_ceiling(jobs: int, peers: Sequence[System]) -> list[Runner]:
    return [
        Runner("raw", "INSERT, 1 row per transaction", _raw_insert(min(jobs, 10_000))),
        Runner("raw", "SKIP LOCKED DELETE, 1/statement, 10 clients", _skip_locked(jobs, 1)),
        Runner("raw", "SKIP LOCKED DELETE, 100/statement, 10 clients", _skip_locked(jobs, 100)),
        Runner("raw", ADVISORY_LOOP_VARIANT, lambda ctx: run_advisory_loop(ctx, jobs)),
    ]


# --- the SQL functions' own cost ---------------------------------------------------------

_BARE_LOCK = """
SELECT c.id
  FROM (SELECT j.id FROM conveyor.jobs AS j
         WHERE j.queue = 'default' AND j.finished_at IS NULL AND j.expired_at IS NULL
           AND j.run_at <= now()
         ORDER BY j.priority, j.run_at, j.id
         LIMIT %(n)s * 3) AS c
 WHERE pg_try_advisory_lock(((c.id >> 32)::integer # 1129270870), c.id::bit(32)::integer)
 LIMIT %(n)s
"""
_BARE_DESTROY = """
WITH d AS (DELETE FROM conveyor.jobs WHERE id = ANY (%s::bigint[]) RETURNING id)
SELECT pg_advisory_unlock(((d.id >> 32)::integer # 1129270870), d.id::bit(32)::integer) FROM d
"""


_OPERATIONS = [
    "enqueue 1 job",
    "enqueue 1,000 jobs",
    "lock 100 jobs",
    "destroy 100 jobs",
    "lock 1 job by id",
    "held_job_ids() (reads pg_locks)",
    "round trip (SELECT 1)",
]


def run_sql_costs(ctx: Context, rounds: int = 300) -> RunResult:
    """What each SQL function costs per call, next to bare SQL doing the same
    database work, on one session with a 40,000-job backlog. The session
    runs with synchronous_commit = off so that the disk's flush latency, the
    same for both, does not drown the difference. Operations are interleaved
    round by round; the figure is the median time per call (round trip
    included, measured by the client)."""
    system = ConveyorSystem()
    with (
        ctx.server.fresh(system.schema, system.install) as url,
        psycopg.connect(url, autocommit=True) as conn,
    ):
        seed_jobs(conn, 40_000)
        conn.execute("SET synchronous_commit = off")
        conn.execute("SET conveyor.notify = off")
        held = conn.execute(
            "SELECT to_regprocedure('conveyor.held_job_ids()') IS NOT NULL"
        ).fetchone()
        payload = json.dumps([{"job_class": "BenchNoOp", "args": [n]} for n in range(1_000)])
        values = ", ".join(["(%s, %s::jsonb)"] * 1_000)
        multi_row = f"INSERT INTO conveyor.jobs (job_class, args) VALUES {values} RETURNING id"
        multi_params: list[Any] = []
        for n in range(1_000):
            multi_params += ("BenchNoOp", f"[{n}]")
        insert = "INSERT INTO conveyor.jobs (job_class, args) VALUES (%s, %s::jsonb) RETURNING id"
        times: dict[tuple[str, str], list[float]] = {}

        def timed(system: str, operation: str, query: str, params: Any = None) -> list[int]:
            t = time.perf_counter()
            rows = conn.execute(query, params).fetchall()
            times.setdefault((system, operation), []).append(time.perf_counter() - t)
            return [row[0] for row in rows]

        for i in range(rounds):
            args = ("BenchNoOp", json.dumps([i]))
            timed(
                "conveyor",
                "enqueue 1 job",
                sql.enqueue(()),  # what conveyor.enqueue(conn, ...) sends
                args,
            )
            timed("raw", "enqueue 1 job", insert, args)
            if i % 10 == 0:
                timed(
                    "conveyor",
                    "enqueue 1,000 jobs",
                    "SELECT id FROM conveyor.enqueue_many(%s::jsonb) AS e(id)",
                    [payload],
                )
                timed("raw", "enqueue 1,000 jobs", multi_row, multi_params)
            ids = timed("conveyor", "lock 100 jobs", _LOCK, [100, []])
            if held and held[0]:
                timed(
                    "conveyor",
                    "held_job_ids() (reads pg_locks)",
                    "SELECT conveyor.held_job_ids()",
                )
            timed("conveyor", "destroy 100 jobs", _DESTROY, [ids, ids])
            ids = timed("raw", "lock 100 jobs", _BARE_LOCK, {"n": 100})
            if len(ids) != 100:
                raise RuntimeError(f"the bare lock took {len(ids)} jobs, not 100")
            timed("raw", "destroy 100 jobs", _BARE_DESTROY, [ids])
            job = conn.execute(insert, args).fetchall()[0][0]
            timed(
                "conveyor",
                "lock 1 job by id",
                "SELECT id FROM conveyor.lock_jobs_by_id(ARRAY[%s]::bigint[], held => '{}')",
                [job],
            )
            conn.execute(_DESTROY, [[job], [job]]).fetchall()
            timed("raw", "round trip (SELECT 1)", "SELECT 1")
    measurements = [
        Measurement(
            system,
            "per call",
            statistics.median(values) * 1e6,
            "us",
            operation,
            higher_is_better=False,
        )
        for (system, operation), values in sorted(
            times.items(),
            key=lambda item: (_OPERATIONS.index(item[0][1]), item[0][0] != "conveyor"),
        )
    ]
    per_call = {
        f"{system} {operation}": round(statistics.median(values) * 1e6, 1)
        for (system, operation), values in times.items()
    }
    summary = ", ".join(
        f"{key} {per_call[key]:.0f} us"
        for key in (
            "conveyor lock 100 jobs",
            "raw lock 100 jobs",
            "conveyor destroy 100 jobs",
            "raw destroy 100 jobs",
        )
    )
    return RunResult(measurements, {"rounds": rounds, "median_us": per_call}, summary=summary)


def _sql_costs(jobs: int, peers: Sequence[System]) -> list[Runner]:
    return [Runner("conveyor", "", run_sql_costs)]


# --- issue 4: worker memory ----------------------------------------------------------------


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


# --- the list ------------------------------------------------------------------------------

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "enqueue_single",
            "1. enqueue, one job per transaction",
            "N jobs, one per transaction (autocommit), one client; conveyor.enqueue through "
            "the Python client vs a plain INSERT into the same table.",
            10_000,
            True,
            _enqueue_single,
        ),
        Scenario(
            "enqueue_bulk",
            "2. bulk enqueue, batches of 1,000",
            "N jobs in batches of 1,000, one statement and transaction per batch; "
            "conveyor.enqueue_many vs one multi-row INSERT of the same rows.",
            50_000,
            True,
            _enqueue_bulk,
        ),
        Scenario(
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
        ),
        Scenario(
            "drain_scaling",
            "4. drain with 1, 2 and 4 worker processes",
            "The drain with 1, 2 and 4 conveyor worker processes of 10 threads each "
            "(default buffer sizes), started in the benchmark's session (one scheduling "
            "group under Linux autogroup, as under one process manager).",
            100_000,
            False,
            _drain_scaling,
        ),
        Scenario(
            "latency_idle",
            "5. latency on an idle worker",
            "An idle worker (default settings); 300 jobs enqueued at 50/s, one per "
            "transaction; time from the enqueue COMMIT returning to the job's start.",
            None,
            True,
            _latency_idle,
        ),
        Scenario(
            "latency_urgent_under_load",
            "6. urgent latency under load",
            f"conveyor worker with default priorities (10,30,50,any,any,any) busy with a "
            f"backlog of {URGENT_BACKLOG:,} priority-100 jobs of {URGENT_JOB_MS:g} ms each; "
            "200 priority-1 jobs arrive at 20/s; their enqueue-to-start latency.",
            None,
            False,
            _latency_urgent,
        ),
        Scenario(
            "backlog_scaling",
            "7. lock+destroy cost against the backlog",
            "One lock_jobs(max_jobs => 100) + destroy_jobs cycle (median of 200) with "
            "1,000 / 100,000 / 1,000,000 ready jobs, and 1,000 ready with 1,000,000 "
            "finished rows kept; seeded with INSERT ... SELECT, VACUUM ANALYZE first; "
            "synchronous_commit = off in this session (the commit flush does not depend "
            "on the backlog). No goal for the last case, 1,000 ready after 1,000,000 "
            "older jobs were destroyed and not vacuumed yet (a burst between two "
            "vacuums): it shows what their dead index entries cost.",
            None,
            False,
            _backlog_scaling,
        ),
        Scenario(
            "raw_ceiling",
            "8. the raw ceiling",
            "The same database work without a queue library, on conveyor.jobs: single-row "
            "INSERT rate (at most 10,000 rows), DELETE ... FOR UPDATE SKIP LOCKED drains "
            "(10 clients, 1 and 100 rows per statement), and a bare Python loop on the "
            "conveyor functions (lock_jobs 100 per call, 10 threads doing nothing, "
            "destroy_jobs in batches).",
            20_000,
            False,
            _raw_ceiling,
        ),
        Scenario(
            "sql_costs",
            "the SQL functions' own cost",
            "Median time per call of enqueue, enqueue_many, lock_jobs, lock_jobs_by_id and "
            "destroy_jobs next to bare SQL doing the same work (and of a pg_locks read and a "
            "bare round trip), one session, 40,000-job backlog, synchronous_commit = off, "
            "300 interleaved rounds.",
            None,
            False,
            _sql_costs,
        ),
        Scenario(
            "worker_memory",
            "issue 4: worker memory across a long drain",
            "RSS of one conveyor worker process (10 threads) sampled every 0.25 s while it "
            "drains N jobs.",
            200_000,
            False,
            _worker_memory,
        ),
    )
}
