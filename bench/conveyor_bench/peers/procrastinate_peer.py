"""procrastinate, driven as its documentation recommends (see procrastinate_app)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ..systems import Enqueue, System, subprocess_env

__all__ = ["ProcrastinateSystem"]


class ProcrastinateSystem(System):
    name = "procrastinate"
    schema = "procrastinate"
    queue_table = "procrastinate_jobs"
    drained_sql = (
        "SELECT NOT EXISTS (SELECT FROM procrastinate_jobs WHERE status IN ('todo', 'doing'))"
    )
    count_sql = "SELECT count(*) FROM procrastinate_jobs"

    def unavailable(self) -> str | None:
        if importlib.util.find_spec("procrastinate") is None:
            return "procrastinate is not installed (pip install ./bench)"
        return None

    def version(self) -> str:
        return importlib.metadata.version("procrastinate")

    def config(self) -> dict[str, Any]:
        return {
            "app": "App(connector=PsycopgConnector(conninfo=...)), one async no-op task",
            "schema": "app.schema_manager.apply_schema()",
            "enqueue": "task.defer(seq=...) per job inside app.open(); "
            "task.batch_defer(...) per batch",
            "worker": "procrastinate --app=conveyor_bench.peers.procrastinate_app.app worker "
            "--concurrency=N (N = the scenario's worker threads; other options "
            "default: listen/notify on, jobs kept as 'succeeded')",
        }

    def _app(self, url: str) -> tuple[Any, Any]:
        from .procrastinate_app import make_app

        return make_app(url)

    def install(self, url: str) -> None:
        app, _ = self._app(url)
        with app.open():
            app.schema_manager.apply_schema()

    def enqueue_single(self, url: str, seqs: Sequence[int]) -> float:
        app, task = self._app(url)
        with app.open():
            task.defer(seq=0)  # open the pool's connection before timing
            start = time.perf_counter()
            for seq in seqs:
                task.defer(seq=seq)
            elapsed = time.perf_counter() - start
        self._forget_warmup(url)
        return elapsed

    def enqueue_bulk(self, url: str, seqs: Sequence[int], batch: int) -> float:
        app, task = self._app(url)
        with app.open():
            task.defer(seq=0)
            start = time.perf_counter()
            for i in range(0, len(seqs), batch):
                task.batch_defer(*({"seq": s} for s in seqs[i : i + batch]))
            elapsed = time.perf_counter() - start
        self._forget_warmup(url)
        return elapsed

    def _forget_warmup(self, url: str) -> None:
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DELETE FROM procrastinate_jobs WHERE args = '{\"seq\": 0}'::jsonb")

    def worker_command(self, url: str, threads: int) -> tuple[list[str], dict[str, str]]:
        argv = [
            sys.executable,
            "-m",
            "procrastinate",
            "--app=conveyor_bench.peers.procrastinate_app.app",
            "worker",
            f"--concurrency={threads or 1}",
        ]
        return argv, subprocess_env({"CONVEYOR_BENCH_DSN": url})

    @contextmanager
    def enqueuer(self, url: str) -> Iterator[Enqueue]:
        app, task = self._app(url)
        with app.open():

            def one(seq: int, priority: int | None = None, job_class: str = "") -> None:
                task.defer(seq=seq)

            yield one
