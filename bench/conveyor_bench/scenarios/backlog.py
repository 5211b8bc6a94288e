"""What one lock_jobs + destroy_jobs cycle costs against backlogs of
different sizes: the per-job cost must not grow with the backlog."""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Sequence

import psycopg

from ..results import Measurement
from ..systems import ConveyorSystem, System
from .base import DESTROY_JOBS, LOCK_JOBS, Context, Runner, RunResult, Scenario, seed_jobs

__all__ = ["BACKLOG_CASES", "BACKLOG_SCALING", "run_backlog"]

_SEED_READY = (
    "INSERT INTO conveyor.jobs (job_class, args)"
    " SELECT 'BenchNoOp', jsonb_build_array(g) FROM generate_series(1, %s) AS g"
)
_SEED_FINISHED = (
    "INSERT INTO conveyor.jobs (job_class, args, finished_at)"
    " SELECT 'BenchNoOp', jsonb_build_array(g), now() FROM generate_series(1, %s) AS g"
)


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
            ids = [r[0] for r in conn.execute(LOCK_JOBS, [batch, []]).fetchall()]
            t_locked = time.perf_counter()
            conn.execute(DESTROY_JOBS, [ids, ids]).fetchall()
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


BACKLOG_SCALING = Scenario(
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
)
