"""procrastinate's side of the benchmark: the app its worker runs.

Set up as procrastinate's documentation recommends: an ``App`` with a
``PsycopgConnector``, an async task, the schema applied with
``schema_manager.apply_schema()`` and the worker started by its CLI,
``procrastinate --app=conveyor_bench.peers.procrastinate_app.app worker``.
The worker reads the database from ``CONVEYOR_BENCH_DSN``.
"""

from __future__ import annotations

import os
from typing import Any

import procrastinate  # type: ignore[import-not-found, unused-ignore]

from ..recorder import record

__all__ = ["app", "make_app"]


def make_app(conninfo: str) -> tuple[procrastinate.App, Any]:
    """A procrastinate App on ``conninfo`` and its no-op task."""
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=conninfo))

    @app.task(name="bench_noop", queue="default")
    async def bench_noop(seq: int) -> None:
        record(seq)

    return app, bench_noop


app, bench_noop = make_app(os.environ.get("CONVEYOR_BENCH_DSN", ""))
