"""Chaos: workers SIGKILLed, connections terminated, PostgreSQL restarted
while three `conveyor worker` processes drain a backlog -- nothing is lost,
and throughput is back within 5 s of each fault.

The tests start a PostgreSQL cluster of their own (initdb into a temp folder,
its own port, run as the ``postgres`` system user when the test runs as
root), one database per test, and install sql/conveyor.sql. Two tests:

- test_chaos_loses_nothing (the storm): enqueues the jobs of
  jobs_for_tests/chaos_jobs.py across three queues and 200 priorities, and
  starts three workers. While they drain it, about once a second it either
  SIGKILLs a random worker (and starts a replacement) or terminates a random
  worker connection with pg_terminate_backend; once, at about 40 % of the
  drain, it restarts PostgreSQL (pg_ctl restart -m fast). It checks that no
  job is lost, atomic effects exist exactly once and duplicates are bounded;
  it reports the recovery after each fault, but faults a second apart
  overlap, so it does not assert it (CONVEYOR_CHAOS_STRICT_RECOVERY=1 does).
- test_chaos_recovers_from_each_fault_within_5_s (isolated faults): the
  whole backlog (jobs sleeping 200-400 ms, so the 12 worker threads, not the
  CPU, bound the rate) is enqueued before three workers start; after a
  baseline over quiet seconds, one fault of each kind -- SIGKILL and a
  replacement, pg_terminate_backend of a locker and of a pool connection, a
  PostgreSQL restart the workers run through -- each followed by a quiet
  period; asserts that the rolling throughput is back at 90 % of the
  baseline within 5 s of each.

Accounting of duplicates (storm): before each fault the victim process is
paused (SIGSTOP) until its locker session is idle, and the job locks that
session holds are counted from pg_locks; only those jobs can run a second time
because of that fault (the jobs a worker locked are the only ones it may have
started). A terminated pool connection counts as one job at risk (a
connection runs one job's transaction at a time). The sum bounds the
duplicates.

Size: CONVEYOR_CHAOS_JOBS (default 20,000) jobs to start the storm with;
CONVEYOR_SOAK_SECONDS (default 40) keeps topping the backlog up and injecting
faults for at least that long;
CONVEYOR_CHAOS_RECOVERY_ROUNDS (default 1) repeats the isolated faults;
CONVEYOR_CHAOS_RESTART_DOWN (default 0) keeps the server down that many
seconds in the isolated restart; CONVEYOR_CHAOS_SEED (default: a fixed seed,
printed) seeds the random choices. The figures are printed and, with
CONVEYOR_CHAOS_REPORT=path.json, written there (and to path-recovery.json) as
JSON (docs/reliability.md quotes runs).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import signal
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from chaos_support import Cluster, WorkerProcess, critical_events, reap
from db_support import JOB_LOCKS, job_ids_locked, wait_for
from psycopg.types.json import Jsonb

pytestmark = [pytest.mark.chaos, pytest.mark.slow, pytest.mark.timeout(1800)]

JOBS = int(os.environ.get("CONVEYOR_CHAOS_JOBS", "20000"))
# The storm injects faults for at least this long, topping the backlog up if
# the workers would drain it sooner: 20,000 jobs alone gave 50-75 faults at
# 200 jobs/s, and 9 once the SQL got five times faster.
SOAK_SECONDS = float(os.environ.get("CONVEYOR_SOAK_SECONDS", "40"))
# The seed of every random choice (jobs, victims, fault times): fixed, so that
# a run is reproducible by default; CONVEYOR_CHAOS_SEED picks another. Each
# test prints it first. (Timing still varies from run to run: the choices
# the seed makes are the same, not what the workers are doing when they land.)
DEFAULT_SEED = 20261204
SEED = int(os.environ.get("CONVEYOR_CHAOS_SEED", str(DEFAULT_SEED)))
WORKERS = 3
THREADS = 4
QUEUES = ["alpha", "beta", "gamma"]
WORKER_ARGS = [
    *[arg for q in QUEUES for arg in ("-q", q)],
    "-w",
    str(THREADS),
    "-i",
    "0.5",
    "--wait-period",
    "20",
    "--shutdown-timeout",
    "5",
]
MODULE = "jobs_for_tests.chaos_jobs"
BUCKET = 0.1  # seconds per throughput bucket
WINDOW = 10  # buckets per throughput window (1 s)
RECOVERY_LIMIT = 5.0
RECOVERY_SHARE = 0.9
FAULT_EVERY = 1.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """One cluster for the file's tests, each in a database of its own."""
    made = Cluster()
    try:
        yield made
    finally:
        made.stop()


#: What the chaos jobs write: one row per effect (chaos_effects) or per run
#: (chaos_runs) of a job.
RECORD_TABLE = (
    "CREATE TABLE {} (job_id bigint NOT NULL, n int NOT NULL, worker_pid int,"
    " at timestamptz NOT NULL DEFAULT clock_timestamp())"
)


class Chaos:
    """The state of one chaos run: workers, faults, bookkeeping."""

    def __init__(self, cluster: Cluster, url: str, log_dir: Path) -> None:
        self.cluster = cluster
        self.url = url
        self.log_dir = log_dir
        self.rng = random.Random(SEED)
        self.workers: list[WorkerProcess] = []
        self.all_workers: list[WorkerProcess] = []
        self.spawned = 0
        self.faults: list[dict[str, Any]] = []
        self.at_risk = 0
        self.ids: dict[str, list[int]] = {"atomic": [], "recorded": [], "doomed": []}
        self._observer: psycopg.Connection[Any] | None = None

    # -- connections ----------------------------------------------------------------------

    def observer(self) -> psycopg.Connection[Any]:
        if self._observer is None or self._observer.closed or self._observer.broken:
            if self._observer is not None:
                self._observer.close()
            self._observer = wait_for(
                self._try_connect,
                what="the test's own connection to the cluster",
                timeout=60,
                interval=0.1,
            )
        assert self._observer is not None
        return self._observer

    def _try_connect(self) -> psycopg.Connection[Any] | None:
        try:
            return psycopg.connect(self.url, autocommit=True, application_name="chaos-test")
        except psycopg.OperationalError:
            return None

    def q(self, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
        for attempt in range(3):
            try:
                cursor = self.observer().execute(statement, params)
                return cursor.fetchall() if cursor.description is not None else []
            except psycopg.OperationalError:
                if attempt == 2:
                    raise
                if self._observer is not None:
                    self._observer.close()
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._observer is not None:
            self._observer.close()

    # -- jobs -----------------------------------------------------------------------------

    def enqueue(
        self, count: int, *, sleep_ms: tuple[float, float] = (2.0, 8.0), doomed: bool = True
    ) -> None:
        """Half atomic, half recorded jobs (with ``doomed``, 1 % doomed), each
        sleeping a random time in ``sleep_ms``."""
        start = sum(len(v) for v in self.ids.values())
        kinds = []
        batch: list[dict[str, Any]] = []
        for n in range(start, start + count):
            kind = "atomic" if n % 2 == 0 else "recorded"
            if doomed and n % 100 == 99:
                kind = "doomed"
            job_class = {"atomic": "AtomicJob", "recorded": "RecordedJob", "doomed": "DoomedJob"}
            spec: dict[str, Any] = {
                "job_class": job_class[kind],
                "args": [n, self.rng.uniform(*sleep_ms)],
                "queue": self.rng.choice(QUEUES),
                "priority": self.rng.randint(1, 200),
            }
            if kind == "doomed":
                spec["maximum_retry_count"] = 0
            batch.append(spec)
            kinds.append(kind)
        with psycopg.connect(self.url, autocommit=True) as conn:
            for offset in range(0, len(batch), 5000):
                ids = [
                    r[0]
                    for r in conn.execute(
                        "SELECT * FROM conveyor.enqueue_many(%s::jsonb)",
                        [Jsonb(batch[offset : offset + 5000])],
                    ).fetchall()
                ]
                for job_id, kind in zip(ids, kinds[offset : offset + 5000], strict=True):
                    self.ids[kind].append(job_id)

    def unresolved(self) -> int:
        return int(
            self.q(
                "SELECT count(*) FROM conveyor.jobs"
                " WHERE finished_at IS NULL AND expired_at IS NULL"
            )[0][0]
        )

    def create_record_tables(self) -> None:
        for table in ("chaos_effects", "chaos_runs"):
            self.q(RECORD_TABLE.format(table))

    # -- workers --------------------------------------------------------------------------

    def start_workers(self) -> float:
        """Start WORKERS workers and wait until each is connected; returns
        the wall-clock time they all were."""
        for _ in range(WORKERS):
            self.spawn()
        for worker in self.workers:
            worker.wait_connected(self.observer())
        return time.time()

    def spawn(self) -> WorkerProcess:
        self.spawned += 1
        worker = WorkerProcess(
            self.url,
            [MODULE],
            name=f"chaos-w{self.spawned}",
            log_dir=self.log_dir,
            args=WORKER_ARGS,
        )
        self.workers.append(worker)
        self.all_workers.append(worker)
        return worker

    def locker_pid(self, worker: WorkerProcess) -> int | None:
        rows = self.q(
            "SELECT w.pid FROM conveyor.lockers AS w JOIN pg_stat_activity AS a ON a.pid = w.pid"
            " WHERE w.process_id = %s AND a.application_name = %s",
            [worker.pid, worker.name],
        )
        return rows[0][0] if rows else None

    def pause(self, workers: list[WorkerProcess]) -> None:
        """SIGSTOP, then wait (up to 1 s) until their sessions run no statement."""
        for worker in workers:
            worker.signal(signal.SIGSTOP)
        names = [w.name for w in workers]
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            busy = self.q(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = ANY(%s)"
                " AND state = 'active'",
                [names],
            )[0][0]
            if busy == 0:
                break
            time.sleep(0.005)

    def locks_of(self, backend_pids: list[int] | None) -> int:
        """Conveyor job locks held by these backends (None: by anyone)."""
        held = job_ids_locked(self.q(JOB_LOCKS))
        return sum(1 for pid, _ in held if backend_pids is None or pid in backend_pids)

    # -- faults ---------------------------------------------------------------------------

    def record(self, kind: str, at: float, at_risk: int, **details: Any) -> None:
        self.at_risk += at_risk
        self.faults.append({"kind": kind, "at": at, "at_risk": at_risk, **details})

    def victim(self) -> WorkerProcess | None:
        """A random worker that is up (registered): killing a replacement
        that is still importing its modules would be the same fault twice."""
        up = [w for w in self.workers if self.locker_pid(w) is not None]
        return self.rng.choice(up) if up else None

    def kill_one(self, *, account: bool = True) -> None:
        """SIGKILL a random worker and start a replacement. With ``account``
        the victim is paused first so that its job locks can be counted."""
        victim = self.victim()
        if victim is None:
            return
        held = 0
        if account:
            self.pause([victim])
            locker = self.locker_pid(victim)
            held = self.locks_of([locker]) if locker else 0
        at = time.time()
        victim.signal(signal.SIGKILL)
        victim.wait(10)
        self.workers.remove(victim)
        self.spawn()
        self.record("sigkill", at, held, worker=victim.name)

    def terminate_one(self, session: str | None = None, *, account: bool = True) -> None:
        """pg_terminate_backend on a random session of a random worker, or on
        the ``session="locker"`` or a ``session="pool"`` connection of a
        random worker that has one."""
        if session is None:
            candidates = [self.victim()]
        else:
            candidates = self.rng.sample(self.workers, len(self.workers))
        for victim in candidates:
            if victim is None:
                continue
            sessions = [
                r[0]
                for r in self.q(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = %s", [victim.name]
                )
            ]
            locker = self.locker_pid(victim)
            if session == "locker":
                sessions = [locker] if locker else []
            elif session == "pool":
                sessions = [pid for pid in sessions if pid != locker]
            if sessions:
                break
        else:
            return
        backend = self.rng.choice(sessions)
        if backend == locker:
            held = 0
            if account:
                self.pause([victim])
                held = self.locks_of([backend])
            at = time.time()
            self.q("SELECT pg_terminate_backend(%s)", [backend])
            victim.signal(signal.SIGCONT)
            self.record("terminate locker", at, held, worker=victim.name)
        else:
            at = time.time()
            self.q("SELECT pg_terminate_backend(%s)", [backend])
            self.record("terminate pool connection", at, 1, worker=victim.name)

    def restart_postgres(self, *, account: bool = True, down: float = 0.0) -> None:
        """pg_ctl restart -m fast (the server stays down ``down`` seconds).
        With ``account`` the workers are paused through it (their job locks
        counted first), so they never see the server down; without, they run
        through the restart."""
        held = 0
        if account:
            self.pause(self.workers)
            held = self.locks_of(None)
        self.close()
        at = time.time()
        self.cluster.restart(down)
        took = time.time() - at
        if account:
            for worker in self.workers:
                worker.signal(signal.SIGCONT)
        self.record("restart postgres", at, held, restart_seconds=round(took, 2))


def completions(chaos: Chaos, since: float = 0.0) -> dict[int, int]:
    """Completed runs per BUCKET, keyed by bucket number (epoch / BUCKET),
    from ``since`` (epoch seconds) on."""
    rows = chaos.q(
        f"""
        SELECT floor(extract(epoch FROM at) / {BUCKET})::bigint AS b, count(*)
          FROM (SELECT at FROM chaos_effects UNION ALL SELECT at FROM chaos_runs) AS done
         WHERE at >= to_timestamp(%s)
         GROUP BY b
        """,
        [since],
    )
    return {int(b): int(c) for b, c in rows}


def window_rate(buckets: dict[int, int], start: float) -> float:
    """Completions per second in [start, start + 1 s) (start rounded down to
    a bucket)."""
    first = int(start / BUCKET)
    return float(sum(buckets.get(first + i, 0) for i in range(WINDOW)))


@contextlib.contextmanager
def chaos_run(
    cluster: Cluster, name: str, log_dir: Path, capsys: pytest.CaptureFixture[str]
) -> Iterator[Chaos]:
    """A Chaos on a new database ``name`` of the cluster; its workers are
    reaped at the end. Prints the seed first, so a failing run can be replayed."""
    with capsys.disabled():
        print(f"\n{name}: CONVEYOR_CHAOS_SEED={SEED}")
    chaos = Chaos(cluster, cluster.create_database(name), log_dir)
    try:
        yield chaos
    finally:
        reap(chaos.all_workers)
        chaos.close()


def recovery_time(
    buckets: dict[int, int], at: float, baseline: float, until: float | None = None
) -> float | None:
    """Seconds from the fault at ``at`` until the end of the first 1-s window
    that starts after it and whose rate is at least RECOVERY_SHARE of the
    baseline -- the rolling rate, counting nothing from before the fault.
    A fault that costs nothing measures 1 s (the window). Only windows that
    end by ``until`` (default: 30 s after the fault) count; None if none does."""
    until = at + 30.0 if until is None else until
    first = math.ceil(at / BUCKET - 1e-9)
    for start in range(first, int(until / BUCKET) - WINDOW + 1):
        if sum(buckets.get(start + i, 0) for i in range(WINDOW)) >= RECOVERY_SHARE * baseline:
            return round((start + WINDOW) * BUCKET - at, 2)
    return None


def test_chaos_loses_nothing(
    cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    began = time.monotonic()
    with chaos_run(cluster, "chaos", tmp_path, capsys) as chaos:
        run(chaos, began, capsys)


def run(chaos: Chaos, began: float, capsys: pytest.CaptureFixture[str]) -> None:
    chaos.create_record_tables()
    chaos.enqueue(JOBS)
    total_enqueued = JOBS
    started = chaos.start_workers()

    # Baseline: the fault-free throughput of the first seconds.
    time.sleep(3.0)
    buckets = completions(chaos)
    warm = [window_rate(buckets, started + 1.0 + 0.5 * i) for i in range(3)]
    baseline = statistics.median(warm)
    assert baseline > 0, "no job completed in the first three seconds"

    restart_done = False
    faults_until = time.monotonic() + SOAK_SECONDS
    next_fault = time.monotonic()
    while True:
        left = chaos.unresolved()
        soaking = time.monotonic() < faults_until
        if soaking and left < baseline * 8:
            chaos.enqueue(int(baseline * 10))
            total_enqueued += int(baseline * 10)
            left = chaos.unresolved()
        # Faults only while the backlog can show whether throughput recovers.
        if left < baseline * (RECOVERY_LIMIT + 3):
            break
        if time.monotonic() >= next_fault:
            done_share = 1 - left / total_enqueued
            if not restart_done and done_share >= 0.4:
                chaos.restart_postgres()
                restart_done = True
            elif chaos.rng.random() < 0.7:
                chaos.kill_one()
            else:
                chaos.terminate_one()
            next_fault = time.monotonic() + chaos.rng.uniform(0.7, 1.3) * FAULT_EVERY
        time.sleep(0.05)
    if not restart_done:
        chaos.restart_postgres()
        restart_done = True

    wait_for(
        lambda: chaos.unresolved() == 0, what="the backlog to drain", timeout=300, interval=0.2
    )
    drained = time.time()

    # -- the checks -----------------------------------------------------------------------
    ids = chaos.ids
    effects = dict(chaos.q("SELECT job_id, count(*) FROM chaos_effects GROUP BY job_id"))
    runs = dict(chaos.q("SELECT job_id, count(*) FROM chaos_runs GROUP BY job_id"))
    left_rows = dict(
        chaos.q("SELECT id, (expired_at IS NOT NULL AND error_count = 1) FROM conveyor.jobs")
    )
    lost = (
        [i for i in ids["atomic"] if i not in effects]
        + [i for i in ids["recorded"] if i not in runs]
        + [i for i in ids["doomed"] if not left_rows.get(i)]
    )
    unexpected_rows = [i for i in left_rows if i not in set(ids["doomed"])]
    atomic_twice = {i: c for i, c in effects.items() if c != 1}
    duplicates = sum(runs.values()) - len(runs)

    # Locks: the live workers hold none once the backlog is gone (their
    # buffers drain and their unlocks flush within a wait period or two).
    wait_for(lambda: chaos.locks_of(None) == 0, what="no job lock to be held", timeout=10)
    live_lockers = {chaos.locker_pid(w) for w in chaos.workers}
    registry = {r[0] for r in chaos.q("SELECT pid FROM conveyor.lockers")}
    registry_ok = registry == live_lockers and None not in live_lockers

    statuses = {}
    for worker in chaos.workers:
        statuses[worker.name] = worker.stop(timeout=30)
    after_stop_locks = chaos.locks_of(None)
    after_stop_registry = chaos.q("SELECT count(*) FROM conveyor.lockers")[0][0]
    broken = {w.name: critical_events(w.events()) for w in chaos.all_workers}
    broken = {k: v for k, v in broken.items() if v}

    buckets = completions(chaos)
    for fault in chaos.faults:
        fault["recovery_s"] = recovery_time(buckets, fault["at"], baseline)
    slow = [f for f in chaos.faults if f["recovery_s"] is None or f["recovery_s"] > RECOVERY_LIMIT]
    kinds: dict[str, int] = {}
    for fault in chaos.faults:
        kinds[fault["kind"]] = kinds.get(fault["kind"], 0) + 1
    recoveries = [f["recovery_s"] for f in chaos.faults if f["recovery_s"] is not None]

    report = {
        "seed": SEED,
        "jobs": total_enqueued,
        "atomic": len(ids["atomic"]),
        "recorded": len(ids["recorded"]),
        "expired on purpose": len(ids["doomed"]),
        "workers": WORKERS,
        "threads per worker": THREADS,
        "workers started": chaos.spawned,
        "faults": kinds,
        "kills": kinds.get("sigkill", 0),
        "terminations": kinds.get("terminate locker", 0)
        + kinds.get("terminate pool connection", 0),
        "restarts": kinds.get("restart postgres", 0),
        "lost": len(lost),
        "atomic effects not exactly once": len(atomic_twice),
        "duplicates": duplicates,
        "jobs at risk at faults (bound)": chaos.at_risk,
        "baseline jobs/s": round(baseline),
        "recovery s (max)": max(recoveries) if recoveries else None,
        "recovery s (median)": round(statistics.median(recoveries), 2) if recoveries else None,
        "faults not recovered within 5 s": len(slow),
        "restart": [
            {k: f[k] for k in ("restart_seconds", "recovery_s", "at_risk")}
            for f in chaos.faults
            if f["kind"] == "restart postgres"
        ],
        "drain seconds": round(drained - started, 1),
        "test seconds": round(time.monotonic() - began, 1),
    }
    with capsys.disabled():
        print("\nchaos report: " + json.dumps(report, indent=2))
    if os.environ.get("CONVEYOR_CHAOS_REPORT"):
        Path(os.environ["CONVEYOR_CHAOS_REPORT"]).write_text(
            json.dumps({**report, "fault log": chaos.faults}, indent=2) + "\n"
        )

    assert lost == [], f"{len(lost)} jobs lost, e.g. {lost[:10]}"
    assert unexpected_rows == [], f"jobs left in the table: {unexpected_rows[:10]}"
    assert atomic_twice == {}, f"atomic effects not exactly once: {list(atomic_twice.items())[:10]}"
    assert duplicates <= chaos.at_risk, (duplicates, chaos.at_risk)
    assert registry_ok, (registry, live_lockers)
    assert broken == {}, f"workers logged critical errors: {broken}"
    assert all(s == 0 for s in statuses.values()), statuses
    assert after_stop_locks == 0 and after_stop_registry == 0
    assert chaos.faults and kinds.get("restart postgres") == 1
    # Recovery within 5 s is measured and reported above. With a fault every
    # second on 2 cores, the next fault often lands before the last one is
    # recovered from, so here the figure measures the storm: it is reported,
    # and asserted only with CONVEYOR_CHAOS_STRICT_RECOVERY=1. The goal is
    # asserted on one fault at a time by
    # test_chaos_recovers_from_each_fault_within_5_s.
    if os.environ.get("CONVEYOR_CHAOS_STRICT_RECOVERY") == "1":
        assert slow == [], f"throughput did not recover within 5 s after: {slow}"


# -- recovery from one fault at a time -------------------------------------------------------

# Jobs that sleep 200-400 ms: the phase's throughput is bounded by the 12
# worker threads (about 40 jobs/s, a sixth of one core for the workers and
# PostgreSQL together), not by the two cores, so the baseline holds steady
# while other programs share the machine (with CPU-bound jobs, their load
# reads as a slow recovery); and a worker lost is a third of the throughput
# lost until it is replaced -- the dip the measurement is about.
ISOLATED_SLEEP_MS = (200.0, 400.0)
ISOLATED_FAULTS = ("sigkill", "terminate locker", "terminate pool connection", "restart postgres")
ISOLATED_ROUNDS = int(os.environ.get("CONVEYOR_CHAOS_RECOVERY_ROUNDS", "1"))
RESTART_DOWN = float(os.environ.get("CONVEYOR_CHAOS_RESTART_DOWN", "0"))
WARM_UP = 2.0  # seconds after the workers register, before the baseline
BASELINE_SECONDS = 3.0
OBSERVE = 8.0  # a fault not recovered from within this is reported as such
SETTLE = 1.0  # quiet seconds after a recovery, before the next fault


def test_chaos_recovers_from_each_fault_within_5_s(
    cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One fault at a time, each followed by a quiet period: after each,
    throughput is back at 90 % of the baseline within 5 s."""
    began = time.monotonic()
    with chaos_run(cluster, "recovery", tmp_path, capsys) as chaos:
        run_isolated(chaos, began, capsys)


def run_isolated(chaos: Chaos, began: float, capsys: pytest.CaptureFixture[str]) -> None:
    chaos.create_record_tables()
    faults = ISOLATED_FAULTS * ISOLATED_ROUNDS
    # The whole backlog goes in before the workers start: nothing is added
    # while throughput is measured. The threads bound the rate, so this is
    # enough for the longest the phase can take, with half again to spare.
    ceiling = WORKERS * THREADS / (statistics.mean(ISOLATED_SLEEP_MS) / 1000)
    longest = WARM_UP + BASELINE_SECONDS + len(faults) * (OBSERVE + SETTLE + 2.0)
    backlog = int(ceiling * longest * 1.5)
    chaos.enqueue(backlog, sleep_ms=ISOLATED_SLEEP_MS, doomed=False)
    started = chaos.start_workers()

    time.sleep(WARM_UP + BASELINE_SECONDS)
    buckets = completions(chaos, started)
    quiet = [
        window_rate(buckets, started + WARM_UP + i * BUCKET)
        for i in range(int((BASELINE_SECONDS - 1.0) / BUCKET) + 1)
    ]
    baseline = statistics.median(quiet)
    assert baseline > 0, "no job completed in the quiet seconds"

    for kind in faults:
        left = chaos.unresolved()
        assert left >= baseline * (OBSERVE + SETTLE + 2.0), (
            f"the backlog ran short ({left} jobs left at {baseline:.0f} jobs/s): "
            "the recovery from the next fault could not be measured"
        )
        before = len(chaos.faults)
        if kind == "sigkill":
            chaos.kill_one(account=False)
        elif kind == "terminate locker":
            chaos.terminate_one("locker", account=False)
        elif kind == "terminate pool connection":
            wait_for(
                lambda: chaos.q(
                    "SELECT 1 FROM pg_stat_activity WHERE application_name LIKE 'chaos-w%%'"
                    " AND pid NOT IN (SELECT pid FROM conveyor.lockers)"
                ),
                what="a pool connection to exist",
            )
            chaos.terminate_one("pool", account=False)
        else:
            chaos.restart_postgres(account=False, down=RESTART_DOWN)
        assert len(chaos.faults) == before + 1, f"could not inject {kind!r}"
        fault = chaos.faults[-1]
        # Watch: when are all lockers registered again, when is the rate back?
        at = fault["at"]
        lockers_up = None
        while time.time() < at + OBSERVE:
            now = time.time()
            if lockers_up is None and all(chaos.locker_pid(w) for w in chaos.workers):
                lockers_up = round(now - at, 2)
            if recovery_time(completions(chaos, at - 1.0), at, baseline, until=now) is not None:
                break
            time.sleep(0.1)
        fault["lockers_up_s"] = lockers_up
        time.sleep(SETTLE)

    ended = time.time()
    buckets = completions(chaos, started)
    nexts = [f["at"] for f in chaos.faults[1:]] + [ended]
    for fault, until in zip(chaos.faults, nexts, strict=True):
        fault["recovery_s"] = recovery_time(buckets, fault["at"], baseline, until)
        fault["rate_before"] = window_rate(buckets, fault["at"] - 1.0)
        fault["rates_after"] = [
            window_rate(buckets, fault["at"] + i) for i in range(int(min(until - fault["at"], 8)))
        ]
        first = math.ceil(fault["at"] / BUCKET)
        fault["completions per 100 ms, from the fault"] = [
            buckets.get(first + i, 0) for i in range(int((until - fault["at"]) / BUCKET))
        ]
    twice = chaos.q("SELECT job_id FROM chaos_effects GROUP BY job_id HAVING count(*) > 1")
    statuses = {w.name: w.stop(timeout=30) for w in chaos.workers}
    broken = {w.name: critical_events(w.events()) for w in chaos.all_workers}
    broken = {k: v for k, v in broken.items() if v}
    retries = [
        [e.get("retry_in") for e in w.events() if e.get("event") == "database_unreachable"]
        for w in chaos.workers
    ]
    slow = [f for f in chaos.faults if f["recovery_s"] is None or f["recovery_s"] > RECOVERY_LIMIT]

    report = {
        "seed": SEED,
        "jobs enqueued before the workers started": backlog,
        "job sleep ms": list(ISOLATED_SLEEP_MS),
        "workers": WORKERS,
        "threads per worker": THREADS,
        "baseline jobs/s": round(baseline),
        "baseline windows (min, max)": [min(quiet), max(quiet)],
        "faults": [
            {
                k: f[k]
                for k in ("kind", "recovery_s", "lockers_up_s", "restart_seconds", "rates_after")
                if k in f
            }
            for f in chaos.faults
        ],
        "locker reconnect delays (s), per worker": retries,
        "faults not recovered within 5 s": len(slow),
        "test seconds": round(time.monotonic() - began, 1),
    }
    with capsys.disabled():
        print("\nchaos recovery report: " + json.dumps(report, indent=2))
    if os.environ.get("CONVEYOR_CHAOS_REPORT"):
        path = Path(os.environ["CONVEYOR_CHAOS_REPORT"])
        path.with_name(path.stem + "-recovery.json").write_text(
            json.dumps({**report, "fault log": chaos.faults}, indent=2) + "\n"
        )

    assert [f["kind"] for f in chaos.faults] == list(faults)
    assert slow == [], f"throughput did not recover to 90 % within 5 s after: {slow}"
    assert twice == [], f"atomic effects kept twice: {twice[:10]}"
    assert broken == {}, f"workers logged critical errors: {broken}"
    assert all(s == 0 for s in statuses.values()), statuses


# -- the precondition of exactly-once effects ------------------------------------------------


@pytest.mark.timeout(120)
def test_destroy_on_the_jobs_connection_says_whether_it_destroyed(
    conn: psycopg.Connection[Any], db_url: str, tmp_path: Path
) -> None:
    """A job that writes its effect and destroys itself in one transaction can
    only keep its effect exactly once if destroy(conn=...) tells it when the
    job was already gone (another run committed first): True the first time,
    False the second. Not a chaos test: it runs in every suite."""
    conn.execute(RECORD_TABLE.format("chaos_runs"))
    job_id = conn.execute("SELECT id FROM conveyor.enqueue('DestroyTwice')").fetchone()[0]  # type: ignore[index]
    worker = WorkerProcess(
        db_url, [MODULE], name="destroy-twice", log_dir=tmp_path, args=["-w", "1", "-i", "0.1"]
    )
    try:
        said = wait_for(
            lambda: conn.execute("SELECT n FROM chaos_runs WHERE job_id = %s", [job_id]).fetchone(),
            what="the job to run",
        )
    finally:
        worker.stop()
    assert said == (10,), "destroy(conn=...) must return True, then False for a job already gone"
