"""The jobs conveyor's worker runs in the benchmark (``conveyor worker conveyor_bench.jobs``)."""

from __future__ import annotations

import time

from conveyor import Job

from .recorder import record

__all__ = ["BenchNoOp", "BenchSleep"]


class BenchNoOp(Job):
    """Does nothing but note its sequence number and start time."""

    def run(self, seq: int) -> None:
        record(seq)


class BenchSleep(Job):
    """Sleeps ``ms`` milliseconds: load that keeps worker threads busy."""

    def run(self, ms: float) -> None:
        time.sleep(ms / 1000.0)
