"""The same database work without conveyor's worker: the raw ceiling (plain
INSERTs, SKIP LOCKED drains, a bare loop on conveyor's functions) and the
cost per call of each SQL function next to bare SQL doing the same work."""

from __future__ import annotations

import json
import queue
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import psycopg

from ..results import Measurement
from ..systems import ConveyorSystem, RawSystem, System
from .base import (
    DESTROY_JOBS,
    LOCK_JOBS,
    Context,
    Runner,
    RunResult,
    Scenario,
    fmt_rate,
    id_array,
    seed_jobs,
    throughput,
)
from .enqueue import enqueue_runner

__all__ = [
    "ADVISORY_LOOP_VARIANT",
    "RAW_CEILING",
    "SQL_COSTS",
    "run_advisory_loop",
    "run_sql_costs",
]

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
        result = enqueue_runner(RawSystem(), jobs, None).run(ctx)
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
        m = throughput("raw", jobs, seconds, variant)
        return RunResult(
            [m],
            {"jobs": jobs, "seconds": seconds, "clients": clients, "per_statement": per_statement},
            summary=fmt_rate(m.value),
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
                        held = id_array(holding)
                        ids = [r[0] for r in conn.execute(LOCK_JOBS, [batch, held]).fetchall()]
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
                        done_ids = id_array(finished)
                        conn.execute(DESTROY_JOBS, [done_ids, done_ids]).fetchall()
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
    m = throughput("raw", jobs, seconds, variant)
    details = {
        "jobs": jobs,
        "seconds": seconds,
        "threads": threads,
        "batch": batch,
        "lock_calls": calls["lock"],
        "destroy_calls": calls["destroy"],
        "mean_destroy_batch": jobs / max(1, calls["destroy"]),
    }
    return RunResult([m], details, summary=fmt_rate(m.value))


ADVISORY_LOOP_VARIANT = "advisory-lock loop, lock_jobs 100/call, 10 threads, destroy_jobs batches"


def _raw_ceiling(jobs: int, peers: Sequence[System]) -> list[Runner]:
    return [
        Runner("raw", "INSERT, 1 row per transaction", _raw_insert(min(jobs, 10_000))),
        Runner("raw", "SKIP LOCKED DELETE, 1/statement, 10 clients", _skip_locked(jobs, 1)),
        Runner("raw", "SKIP LOCKED DELETE, 100/statement, 10 clients", _skip_locked(jobs, 100)),
        Runner("raw", ADVISORY_LOOP_VARIANT, lambda ctx: run_advisory_loop(ctx, jobs)),
    ]


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


#: conveyor.enqueue with every option left to its default, reading the
#: result's field (a function in FROM would add a tuplestore per call).
_ENQUEUE = "SELECT (conveyor.enqueue(%s::text, %s::jsonb)).id"

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
                _ENQUEUE,
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
            ids = timed("conveyor", "lock 100 jobs", LOCK_JOBS, [100, []])
            if held and held[0]:
                timed(
                    "conveyor",
                    "held_job_ids() (reads pg_locks)",
                    "SELECT conveyor.held_job_ids()",
                )
            timed("conveyor", "destroy 100 jobs", DESTROY_JOBS, [ids, ids])
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
            conn.execute(DESTROY_JOBS, [[job], [job]]).fetchall()
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


RAW_CEILING = Scenario(
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
)

SQL_COSTS = Scenario(
    "sql_costs",
    "the SQL functions' own cost",
    "Median time per call of enqueue, enqueue_many, lock_jobs, lock_jobs_by_id and "
    "destroy_jobs next to bare SQL doing the same work (and of a pg_locks read and a "
    "bare round trip), one session, 40,000-job backlog, synchronous_commit = off, "
    "300 interleaved rounds.",
    None,
    False,
    _sql_costs,
)
