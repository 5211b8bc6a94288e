"""conveyor's benchmark: ``conveyor bench`` (also ``conveyor-bench``).

Throughput, latency and scaling of conveyor, measured next to the same work
done with raw SQL and next to procrastinate and PgQueuer, each run in a fresh
database on one PostgreSQL server. It drives conveyor through its public
API only: the ``conveyor`` package's exports, the ``conveyor worker``
command and the ``conveyor.*`` SQL functions. Run ``conveyor bench --help``
or ``python -m conveyor_bench``; see bench/README.md and docs/performance.md.
"""

from __future__ import annotations

from .cli import bench

__all__ = ["bench"]
