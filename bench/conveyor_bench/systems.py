"""The queues under test, behind one interface.

A :class:`System` knows how to install its schema into an empty database,
enqueue jobs one per transaction and in batches, pre-load a backlog, start
its worker as a separate process, and tell when its queue is drained. The
scenarios are written once against this interface, so conveyor and its peers
are measured by the same code. ``raw`` is no queue: plain INSERTs into
conveyor's table, the floor the enqueue figures are compared with.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

__all__ = ["ConveyorSystem", "RawSystem", "System", "package_roots"]

#: Enqueue a job with this sequence number (and optionally a priority) in its
#: own transaction; returns once the transaction has committed.
Enqueue = Callable[..., None]


def package_roots() -> list[str]:
    """The folders holding the ``conveyor`` and ``conveyor_bench`` packages,
    for subprocesses' PYTHONPATH: workers import the same code as the
    benchmark, even when it runs from a source tree without an install."""
    import conveyor

    import conveyor_bench

    return [
        str(Path(module.__file__ or "").resolve().parent.parent)
        for module in (conveyor, conveyor_bench)
    ]


def subprocess_env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    paths = [*package_roots(), *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class System:
    """One queue implementation as the benchmark drives it."""

    #: Name in reports and ``--compare``.
    name = ""
    #: Key of the template database: systems sharing a schema share it.
    schema = ""
    #: Table the drain gate locks (see scenarios.drain) and rows are counted in.
    queue_table = ""
    #: A query returning true once no job is left to work.
    drained_sql = "SELECT true"
    #: A query returning the number of jobs in the queue (any state).
    count_sql = "SELECT 0"

    def unavailable(self) -> str | None:
        """Why this system cannot run here (a missing package), or None."""
        return None

    def version(self) -> str:
        return ""

    def config(self) -> dict[str, Any]:
        """How the system is set up, printed next to its figures."""
        return {}

    def install(self, url: str) -> None:
        raise NotImplementedError

    def enqueue_single(self, url: str, seqs: Sequence[int]) -> float:
        """Enqueue one job per transaction; return the seconds it took."""
        raise NotImplementedError

    def enqueue_bulk(self, url: str, seqs: Sequence[int], batch: int) -> float:
        """Enqueue in batches of ``batch`` jobs, one transaction each; return seconds."""
        raise NotImplementedError

    def seed(self, url: str, seqs: Sequence[int]) -> None:
        """Enqueue a backlog (not timed)."""
        self.enqueue_bulk(url, seqs, 5_000)

    def worker_command(self, url: str, threads: int) -> tuple[list[str], dict[str, str]]:
        """argv and environment of one worker process with ``threads`` workers."""
        raise NotImplementedError

    @contextmanager
    def enqueuer(self, url: str) -> Iterator[Enqueue]:
        """A function enqueueing one job per transaction, for the latency scenarios."""
        raise NotImplementedError
        yield  # pragma: no cover


# --- conveyor --------------------------------------------------------------------


def install_conveyor(url: str) -> None:
    """Install the conveyor schema from the SQL bundled with the package."""
    from conveyor import migrate

    migrate(url)


class ConveyorSystem(System):
    name = "conveyor"
    schema = "conveyor"
    queue_table = "conveyor.jobs"
    drained_sql = "SELECT NOT EXISTS (SELECT FROM conveyor.jobs)"
    count_sql = "SELECT count(*) FROM conveyor.jobs"
    job_module = "conveyor_bench.jobs"

    def version(self) -> str:
        import conveyor

        return str(getattr(conveyor, "__version__", ""))

    def config(self) -> dict[str, Any]:
        return {
            "enqueue": "conveyor.enqueue(conn, ...) per job, autocommit; "
            "conveyor.enqueue_many(conn, jobs) per batch",
            "worker": "conveyor worker conveyor_bench.jobs (defaults unless the scenario says)",
        }

    def install(self, url: str) -> None:
        install_conveyor(url)

    def enqueue_single(self, url: str, seqs: Sequence[int]) -> float:
        from conveyor import enqueue

        with psycopg.connect(url, autocommit=True) as conn:
            start = time.perf_counter()
            for seq in seqs:
                enqueue(conn, "BenchNoOp", seq)
            return time.perf_counter() - start

    def enqueue_bulk(self, url: str, seqs: Sequence[int], batch: int) -> float:
        from conveyor import enqueue_many

        with psycopg.connect(url, autocommit=True) as conn:
            start = time.perf_counter()
            for i in range(0, len(seqs), batch):
                enqueue_many(
                    conn, [{"job_class": "BenchNoOp", "args": [s]} for s in seqs[i : i + batch]]
                )
            return time.perf_counter() - start

    def worker_command(
        self, url: str, threads: int, options: Sequence[str] = ()
    ) -> tuple[list[str], dict[str, str]]:
        argv = [
            sys.executable,
            "-m",
            "conveyor",
            "worker",
            self.job_module,
            "--log-level",
            "warning",
        ]
        if threads:
            argv += ["--worker-count", str(threads)]
        argv += list(options)
        return argv, subprocess_env({"DATABASE_URL": url})

    @contextmanager
    def enqueuer(self, url: str) -> Iterator[Enqueue]:
        from conveyor import enqueue

        with psycopg.connect(url, autocommit=True) as conn:

            def one(seq: int, priority: int | None = None, job_class: str = "BenchNoOp") -> None:
                enqueue(conn, job_class, seq, priority=priority)

            yield one


class RawSystem(ConveyorSystem):
    """Plain INSERTs into conveyor.jobs: no function, no client library."""

    name = "raw"

    def config(self) -> dict[str, Any]:
        return {
            "enqueue": "INSERT INTO conveyor.jobs (job_class, args) VALUES (%s, %s::jsonb) "
            "per job, autocommit; one multi-row INSERT per batch",
        }

    def enqueue_single(self, url: str, seqs: Sequence[int]) -> float:
        statement = (
            "INSERT INTO conveyor.jobs (job_class, args) VALUES (%s, %s::jsonb) RETURNING id"
        )
        with psycopg.connect(url, autocommit=True) as conn:
            start = time.perf_counter()
            for seq in seqs:
                conn.execute(statement, ("BenchNoOp", json.dumps([seq]))).fetchone()
            return time.perf_counter() - start

    def enqueue_bulk(self, url: str, seqs: Sequence[int], batch: int) -> float:
        statements: dict[int, str] = {}

        def statement(rows: int) -> str:
            text = statements.get(rows)
            if text is None:
                values = ", ".join(["(%s, %s::jsonb)"] * rows)
                text = f"INSERT INTO conveyor.jobs (job_class, args) VALUES {values} RETURNING id"
                statements[rows] = text
            return text

        with psycopg.connect(url, autocommit=True) as conn:
            start = time.perf_counter()
            for i in range(0, len(seqs), batch):
                chunk = seqs[i : i + batch]
                params: list[Any] = []
                for seq in chunk:
                    params += ("BenchNoOp", json.dumps([seq]))
                conn.execute(statement(len(chunk)), params).fetchall()
            return time.perf_counter() - start
