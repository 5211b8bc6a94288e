"""Enqueue throughput: one job per transaction, and batches of 1,000."""

from __future__ import annotations

from collections.abc import Sequence

import psycopg

from ..systems import ConveyorSystem, RawSystem, System
from .base import Context, Runner, RunResult, Scenario, fmt_rate, throughput

__all__ = ["ENQUEUE_BULK", "ENQUEUE_SINGLE", "enqueue_runner"]


def enqueue_runner(system: System, jobs: int, batch: int | None) -> Runner:
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
        m = throughput(system.name, jobs, seconds)
        details = {"jobs": jobs, "seconds": seconds, "us_per_job": seconds / jobs * 1e6}
        if batch is not None:
            details["batch"] = batch
        return RunResult([m], details, summary=fmt_rate(m.value))

    return Runner(system.name, "", run)


def _enqueue_single(jobs: int, peers: Sequence[System]) -> list[Runner]:
    return [enqueue_runner(s, jobs, None) for s in (ConveyorSystem(), RawSystem(), *peers)]


def _enqueue_bulk(jobs: int, peers: Sequence[System]) -> list[Runner]:
    return [enqueue_runner(s, jobs, 1_000) for s in (ConveyorSystem(), RawSystem(), *peers)]


ENQUEUE_SINGLE = Scenario(
    "enqueue_single",
    "1. enqueue, one job per transaction",
    "N jobs, one per transaction (autocommit), one client; conveyor.enqueue through "
    "the Python client vs a plain INSERT into the same table.",
    10_000,
    True,
    _enqueue_single,
)

ENQUEUE_BULK = Scenario(
    "enqueue_bulk",
    "2. bulk enqueue, batches of 1,000",
    "N jobs in batches of 1,000, one statement and transaction per batch; "
    "conveyor.enqueue_many vs one multi-row INSERT of the same rows.",
    50_000,
    True,
    _enqueue_bulk,
)
