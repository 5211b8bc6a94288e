"""The benchmark scenarios, by family: enqueue, drain (and its scaling and
memory), latency, backlog, and the ceiling of the same work without a queue.

Each scenario expands into *runners*: one per system (or per variant, such as
a worker count or a backlog size). A runner does one complete run in a fresh
database and returns its figures; the orchestrator (:mod:`..runner`) repeats
the runners K times, interleaved.
"""

from __future__ import annotations

from .backlog import BACKLOG_SCALING, run_backlog
from .base import Context, Runner, RunResult, Scenario
from .capacity import DB_COST
from .ceiling import ADVISORY_LOOP_VARIANT, RAW_CEILING, SQL_COSTS
from .drain import DRAIN, DRAIN_PROCESSES, DRAIN_SCALING, DRAIN_TUNED_VARIANT, WORKER_MEMORY
from .enqueue import ENQUEUE_BULK, ENQUEUE_SINGLE
from .latency import LATENCY_IDLE, LATENCY_URGENT
from .many import MANY_WORKERS
from .soak import SOAK, SOAK_SHORT

__all__ = [
    "ADVISORY_LOOP_VARIANT",
    "DRAIN_TUNED_VARIANT",
    "SCENARIOS",
    "Context",
    "RunResult",
    "Runner",
    "Scenario",
    "run_backlog",
]

#: Every scenario by name, in the order of the report.
SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        ENQUEUE_SINGLE,
        ENQUEUE_BULK,
        DRAIN,
        DRAIN_SCALING,
        DRAIN_PROCESSES,
        LATENCY_IDLE,
        LATENCY_URGENT,
        BACKLOG_SCALING,
        RAW_CEILING,
        SQL_COSTS,
        WORKER_MEMORY,
        MANY_WORKERS,
        DB_COST,
        SOAK,
        SOAK_SHORT,
    )
}
