"""Many workers against one server: 20 worker processes of 10 threads each
drain one backlog, next to 1 and 2 processes in the same run.

Connections: each conveyor worker process opens one session of its own, the
locker's (locking, notifications and resolutions all go through it); the
pool job code borrows from opens on a job's first ``self.connection()``,
which the benchmark's no-op jobs never call. 20 processes are thus 20
sessions, well inside ``max_connections = 100``; jobs that use the database
add up to one pooled connection per thread (here 10 a process: 220 in all,
past the default limit -- see docs/performance.md, "Capacity")."""

from __future__ import annotations

from collections.abc import Sequence

from ..systems import ConveyorSystem, System
from .base import Context, Runner, RunResult, Scenario
from .drain import run_drain

__all__ = ["MANY_WORKERS"]

#: Words in a worker's log that mean a connection failed.
CONNECTION_ERRORS = (
    "database_unreachable",
    "locker_connection_lost",
    "too many clients",
    "lock_table_full",
    "locker_failed",
)


def _many(jobs: int, peers: Sequence[System]) -> list[Runner]:
    def runner(processes: int) -> Runner:
        variant = f"{processes} x 10 threads"

        def run(ctx: Context) -> RunResult:
            result = run_drain(ctx, ConveyorSystem(), jobs, processes=processes, variant=variant)
            logs = sorted(ctx.workdir.glob("*-logs"))[-1].iterdir()  # this run's
            errors = sorted(
                {
                    word
                    for path in logs
                    if path.is_file()
                    for word in CONNECTION_ERRORS
                    if word in path.read_text(errors="replace")
                }
            )
            result.details["connection_errors"] = errors
            result.details["sessions_per_process"] = 1
            result.summary += ", connection errors: " + (", ".join(errors) or "none")
            return result

        return Runner("conveyor", variant, run)

    return [runner(p) for p in (1, 2, 20)]


MANY_WORKERS = Scenario(
    "many_workers",
    "many workers: 1, 2 and 20 processes of 10 threads",
    "N no-op jobs drained by 1, 2 and 20 conveyor worker processes of 10 threads "
    "each (default options: adaptive buffer); exactly once checked in the database, "
    "the workers' logs searched for connection errors. Each process holds one "
    "session (its locker's).",
    100_000,
    False,
    _many,
)
