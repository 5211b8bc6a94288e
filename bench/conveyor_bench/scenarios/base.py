"""What every scenario is made of: a run's context and result, runners, the
scenario itself, and the SQL several scenarios share."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from ..db import Server
from ..results import Measurement
from ..systems import System

__all__ = [
    "DESTROY_JOBS",
    "LOCK_JOBS",
    "Context",
    "RunResult",
    "Runner",
    "Scenario",
    "fmt_rate",
    "id_array",
    "seed_jobs",
    "throughput",
]


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


def throughput(system: str, jobs: int, seconds: float, variant: str = "") -> Measurement:
    return Measurement(system, "throughput", jobs / seconds, "jobs/s", variant)


def fmt_rate(value: float) -> str:
    return f"{value:,.0f} jobs/s"


# --- SQL several scenarios send --------------------------------------------------------

# Both pass `held`, the jobs the session holds, as conveyor's locker does: a
# caller that keeps count spares each call a pg_locks read.
LOCK_JOBS = (
    "SELECT id FROM conveyor.lock_jobs(queues => '{default}', max_jobs => %s, held => %s::bigint[])"
)
DESTROY_JOBS = "SELECT conveyor.destroy_jobs(%s::bigint[], held => %s::bigint[])"
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


def id_array(values: Iterable[int]) -> str:
    """``{1,2,3}``: job ids as a PostgreSQL array literal for a ``%s::bigint[]``
    parameter, cheaper to build than psycopg's list adaptation (as conveyor's
    locker does it). Only for ints, whose ``str`` holds no quote or brace."""
    return "{" + ",".join(map(str, values)) + "}"
