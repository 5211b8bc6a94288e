"""PgQueuer, driven as its documentation recommends (see pgqueuer_app)."""

from __future__ import annotations

import asyncio
import importlib.metadata
import importlib.util
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ..systems import Enqueue, System, subprocess_env

__all__ = ["PgQueuerSystem"]


class PgQueuerSystem(System):
    name = "pgqueuer"
    schema = "pgqueuer"
    queue_table = "pgqueuer"
    # Finished jobs are deleted from the queue table (and logged elsewhere).
    drained_sql = "SELECT NOT EXISTS (SELECT FROM pgqueuer WHERE status IN ('queued', 'picked'))"
    count_sql = "SELECT count(*) FROM pgqueuer"

    def unavailable(self) -> str | None:
        for module in ("pgqueuer", "asyncpg"):
            if importlib.util.find_spec(module) is None:
                return f"{module} is not installed (pip install ./bench)"
        return None

    def version(self) -> str:
        return importlib.metadata.version("pgqueuer")

    def config(self) -> dict[str, Any]:
        return {
            "driver": "asyncpg (AsyncpgDriver)",
            "schema": "pgq install (durable tables)",
            "enqueue": "Queries.enqueue('bench_noop', payload) per job; "
            "Queries.enqueue([...], [...], [...]) per batch",
            "worker": "pgqueuer.run(main), what `pgq run` does (defaults: batch-size 10, "
            "unlimited concurrent tasks, continuous mode, uvloop), one async no-op "
            "entrypoint; `pgq run` itself fails at start-up in pgqueuer 1.6.0 with "
            "typer 0.29",
        }

    def install(self, url: str) -> None:
        subprocess.run(
            [sys.executable, "-m", "pgqueuer", "--pg-dsn", url, "install"],
            check=True,
            capture_output=True,
            text=True,
            env=subprocess_env({}),
        )

    async def _queries(self, url: str) -> tuple[Any, Any]:
        import asyncpg  # type: ignore[import-untyped, import-not-found, unused-ignore]
        from pgqueuer.db import AsyncpgDriver  # type: ignore[import-not-found, unused-ignore]
        from pgqueuer.queries import Queries  # type: ignore[import-not-found, unused-ignore]

        connection = await asyncpg.connect(url)
        return connection, Queries(AsyncpgDriver(connection))

    def enqueue_single(self, url: str, seqs: Sequence[int]) -> float:
        async def go() -> float:
            connection, queries = await self._queries(url)
            try:
                start = time.perf_counter()
                for seq in seqs:
                    await queries.enqueue("bench_noop", b"%d" % seq)
                return time.perf_counter() - start
            finally:
                await connection.close()

        return asyncio.run(go())

    def enqueue_bulk(self, url: str, seqs: Sequence[int], batch: int) -> float:
        async def go() -> float:
            connection, queries = await self._queries(url)
            try:
                start = time.perf_counter()
                for i in range(0, len(seqs), batch):
                    chunk = seqs[i : i + batch]
                    await queries.enqueue(
                        ["bench_noop"] * len(chunk), [b"%d" % s for s in chunk], [0] * len(chunk)
                    )
                return time.perf_counter() - start
            finally:
                await connection.close()

        return asyncio.run(go())

    def worker_command(self, url: str, threads: int) -> tuple[list[str], dict[str, str]]:
        argv = [sys.executable, "-m", "conveyor_bench.peers.pgqueuer_app"]
        return argv, subprocess_env({"CONVEYOR_BENCH_DSN": url})

    @contextmanager
    def enqueuer(self, url: str) -> Iterator[Enqueue]:
        with asyncio.Runner() as runner:
            connection, queries = runner.run(self._queries(url))
            try:

                def one(seq: int, priority: int | None = None, job_class: str = "") -> None:
                    runner.run(queries.enqueue("bench_noop", b"%d" % seq))

                yield one
            finally:
                runner.run(connection.close())
