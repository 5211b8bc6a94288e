"""``conveyor bench``: conveyor's benchmark (issue 5).

Throughput, latency and scaling of conveyor, measured next to the same work
done with raw SQL and next to procrastinate and PgQueuer, each run in a fresh
database on one PostgreSQL server. Run ``conveyor bench --help``, or
``python -m conveyor.bench``; see bench/README.md and docs/performance.md.
"""

from __future__ import annotations

from .cli import bench

__all__ = ["bench"]
