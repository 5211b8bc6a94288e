"""asyncio: ``async def run`` jobs in the real worker (one event loop per
process, many jobs in flight), their async connections, the blocked-loop
watchdog, and ``conveyor.aio``'s enqueue in the caller's transaction."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from db_support import scalar, wait_for

import conveyor
import conveyor.aio

Connect = Callable[..., psycopg.Connection[Any]]

done: list[Any] = []
threads_seen: set[str] = set()
release = threading.Event()


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    done.clear()
    threads_seen.clear()
    release.clear()
    yield
    release.set()


@pytest.fixture
def start_worker(db_url: str) -> Iterator[Callable[..., conveyor.Worker]]:
    started: list[conveyor.Worker] = []

    def _start(**options: Any) -> conveyor.Worker:
        options.setdefault("poll_interval", 0.2)
        options.setdefault("wait_period", 0.01)
        options.setdefault("job_middleware", [])
        worker = conveyor.Worker(db_url, **options)
        started.append(worker)
        worker.start()
        return worker

    yield _start
    release.set()
    for worker in started:
        worker.stop(timeout=5)
        assert not [t.name for t in worker.threads if t.is_alive()]


def count_jobs(conn: psycopg.Connection[Any], where: str = "true") -> int:
    return int(scalar(conn, f"SELECT count(*) FROM conveyor.jobs WHERE {where}"))


class AsyncHello(conveyor.Job):
    async def run(self, name: str, *, punctuation: str = "!") -> None:
        await asyncio.sleep(0)
        threads_seen.add(threading.current_thread().name)
        done.append(f"hello {name}{punctuation}")


class AsyncSleeper(conveyor.Job):
    async def run(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        done.append(seconds)


class AsyncFails(conveyor.Job):
    retry_interval = 100.0

    async def run(self) -> None:
        await asyncio.sleep(0)
        raise ValueError("async boom")


class AsyncFailsThenCounts(conveyor.Job):
    maximum_retry_count = 1
    retry_interval = 0.0

    async def run(self) -> None:
        await asyncio.sleep(0)
        done.append(self.error_count)
        raise RuntimeError(f"failure {self.error_count}")


class AsyncWritesAndFinishes(conveyor.Job):
    async def run(self, value: int) -> None:
        async with self.aconnection() as conn:
            await conn.execute("INSERT INTO results (value) VALUES (%s)", (value,))
            done.append(await self.afinish(conn=conn))


class AsyncLeaksConnection(conveyor.Job):
    retry_interval = 100.0

    async def run(self) -> None:
        manager = self.aconnection()
        await manager.__aenter__()  # never left: the worker must close it


class AsyncBlocksLoop(conveyor.Job):
    async def run(self) -> None:
        time.sleep(0.6)  # a blocking call inside async code: the watchdog's case
        done.append("blocked")


class AsyncWaitsForever(conveyor.Job):
    async def run(self) -> None:
        done.append("started")
        while not release.is_set():
            await asyncio.sleep(0.01)


class AsyncEnqueuesOnItsConnection(conveyor.Job):
    async def run(self, value: int) -> None:
        async with self.aconnection() as conn:
            await conn.execute("INSERT INTO results (value) VALUES (%s)", (value,))
        done.append(value)


# --- the worker runs async jobs ---------------------------------------------------


def test_an_async_job_runs_on_the_worker_loop_and_is_destroyed(
    conn: psycopg.Connection[Any], start_worker: Callable[..., conveyor.Worker]
) -> None:
    job_id = conveyor.enqueue(conn, AsyncHello, "world", kwargs={"punctuation": "?"})
    worker = start_worker(worker_count=2)
    wait_for(lambda: done, what="the async job")
    assert done == ["hello world?"]
    assert threads_seen == {"conveyor-asyncio"}
    wait_for(lambda: count_jobs(conn) == 0, what="the job destroyed")
    assert job_id is not None
    assert {"conveyor-asyncio", "conveyor-asyncio-watchdog"} <= {
        t.name for t in worker.threads
    }


def test_an_async_job_that_raises_is_retried_with_its_error(
    conn: psycopg.Connection[Any], start_worker: Callable[..., conveyor.Worker]
) -> None:
    job_id = conveyor.enqueue(conn, AsyncFails)
    start_worker(worker_count=1)
    wait_for(
        lambda: count_jobs(conn, "error_count = 1"),
        what="the error recorded",
    )
    row = conn.execute(
        "SELECT last_error_message, last_error_backtrace, run_at > now() + interval '90 s'"
        " FROM conveyor.jobs WHERE id = %s",
        (job_id,),
    ).fetchone()
    assert row is not None
    assert row[0] == "ValueError: async boom"
    assert "test_asyncio.py" in row[1] and "async boom" in row[1]
    assert row[2], "retry_interval = 100 s was applied"


def test_an_async_job_retries_then_expires_past_its_maximum(
    conn: psycopg.Connection[Any], start_worker: Callable[..., conveyor.Worker]
) -> None:
    job_id = conveyor.enqueue(conn, AsyncFailsThenCounts)
    start_worker(worker_count=1)
    wait_for(lambda: count_jobs(conn, "expired_at IS NOT NULL"), what="the job expired")
    assert done == [0, 1]
    row = conn.execute(
        "SELECT error_count, last_error_message FROM conveyor.jobs WHERE id = %s",
        (job_id,),
    ).fetchone()
    assert row == (2, "RuntimeError: failure 1")


def test_an_async_job_writes_and_resolves_itself_on_its_async_connection(
    conn: psycopg.Connection[Any], start_worker: Callable[..., conveyor.Worker]
) -> None:
    conn.execute("CREATE TABLE results (value int)")
    job_id = conveyor.enqueue(conn, AsyncWritesAndFinishes, 7)
    start_worker(worker_count=1)
    wait_for(lambda: done, what="the async job")
    assert done == [True]
    wait_for(
        lambda: count_jobs(conn, "finished_at IS NOT NULL"), what="the job finished"
    )
    assert scalar(conn, "SELECT array_agg(value) FROM results") == [7]
    assert job_id is not None


def test_an_async_connection_left_open_is_closed_and_is_the_jobs_error(
    conn: psycopg.Connection[Any], start_worker: Callable[..., conveyor.Worker]
) -> None:
    conveyor.enqueue(conn, AsyncLeaksConnection)
    start_worker(worker_count=1)
    wait_for(lambda: count_jobs(conn, "error_count = 1"), what="the error recorded")
    message = scalar(conn, "SELECT last_error_message FROM conveyor.jobs")
    assert "kept 1 borrowed connection(s)" in message


def test_a_thousand_async_sleeps_overlap_far_beyond_the_worker_threads(
    conn: psycopg.Connection[Any], start_worker: Callable[..., conveyor.Worker]
) -> None:
    """The issue's figure: 1,000 jobs that each await asyncio.sleep(0.1), 10
    worker threads. Were each thread to wait for its job, that is 100 rounds
    of 0.1 s = 10 s; with the loop's concurrency it is a fraction of it."""
    conveyor.enqueue_many(conn, [{"job_class": AsyncSleeper, "args": [0.1]}] * 1000)
    start = time.monotonic()
    start_worker(worker_count=10)
    wait_for(lambda: len(done) == 1000, timeout=60, what="1,000 async jobs")
    elapsed = time.monotonic() - start
    wait_for(lambda: count_jobs(conn) == 0, what="every job destroyed")
    print(f"1,000 x asyncio.sleep(0.1) with 10 worker threads: {elapsed:.2f} s")
    assert elapsed < 5.0, f"{elapsed:.2f} s: the async jobs did not overlap"


def test_job_middleware_still_wraps_an_async_job(
    conn: psycopg.Connection[Any], start_worker: Callable[..., conveyor.Worker]
) -> None:
    seen: list[str] = []

    def middleware(job: conveyor.Job, proceed: Callable[[], Any]) -> Any:
        seen.append(f"before {type(job).__name__}")
        result = proceed()
        seen.append(f"after {done}")
        return result

    conveyor.enqueue(conn, AsyncHello, "middleware")
    start_worker(worker_count=1, job_middleware=[middleware])
    wait_for(lambda: len(seen) == 2, what="the middleware around the job")
    assert seen == ["before AsyncHello", "after ['hello middleware!']"]
    wait_for(lambda: count_jobs(conn) == 0, what="the job destroyed")


def test_a_job_blocking_the_loop_is_logged_with_its_name(
    conn: psycopg.Connection[Any],
    start_worker: Callable[..., conveyor.Worker],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="conveyor")
    job_id = conveyor.enqueue(conn, AsyncBlocksLoop)
    start_worker(worker_count=1, async_block_threshold=0.1)
    wait_for(lambda: done, what="the blocking job")
    name = f"conveyor-job-{job_id} AsyncBlocksLoop"

    def lines(event: str) -> list[dict[str, Any]]:
        # Only this job's lines: on a loaded machine the loop thread may also
        # miss a beat without any job to blame (task None).
        return [
            r.conveyor  # type: ignore[attr-defined]
            for r in caplog.records
            if r.getMessage() == event and r.conveyor["task"] == name  # type: ignore[attr-defined]
        ]

    wait_for(lambda: lines("event_loop_unblocked"), what="the unblocked line")
    (blocked,) = lines("event_loop_blocked")
    assert "time.sleep(0.6)" in blocked["stack"]
    (unblocked,) = lines("event_loop_unblocked")
    assert unblocked["blocked_for"] >= 0.4


def test_an_async_job_past_the_shutdown_deadline_is_cancelled_and_runs_again(
    conn: psycopg.Connection[Any], start_worker: Callable[..., conveyor.Worker]
) -> None:
    job_id = conveyor.enqueue(conn, AsyncWaitsForever)
    worker = start_worker(worker_count=1)
    wait_for(lambda: done, what="the job started")
    assert worker.stop(timeout=0.3) is False, "an async job was given up"
    assert not [t.name for t in worker.threads if t.is_alive()]
    worker.stop(timeout=0.3)  # twice is harmless
    row = conn.execute(
        "SELECT error_count, last_error_message FROM conveyor.jobs WHERE id = %s",
        (job_id,),
    ).fetchone()
    assert row == (0, None), "the job is untouched: it runs again"
    assert count_jobs(
        conn, "id NOT IN (SELECT objid FROM pg_locks WHERE locktype = 'advisory')"
    )


def test_async_jobs_share_the_async_pool(
    conn: psycopg.Connection[Any], start_worker: Callable[..., conveyor.Worker]
) -> None:
    conn.execute("CREATE TABLE results (value int)")
    conveyor.enqueue_many(
        conn,
        [{"job_class": AsyncEnqueuesOnItsConnection, "args": [n]} for n in range(20)],
    )
    start_worker(worker_count=2)
    wait_for(lambda: len(done) == 20, what="20 async jobs")
    assert scalar(conn, "SELECT count(*) FROM results") == 20


# --- the CLI ----------------------------------------------------------------------

CLI_JOBS = """
import asyncio
import time

import conveyor


class AsyncRecords(conveyor.Job):
    async def run(self, value):
        await asyncio.sleep(0.05)
        async with self.aconnection() as conn:
            await conn.execute("INSERT INTO results (value) VALUES (%s)", (value,))
            await self.adestroy(conn=conn)


class AsyncBlocks(conveyor.Job):
    async def run(self):
        time.sleep(0.5)
"""


def test_conveyor_worker_runs_async_jobs_with_its_async_options(
    db_url: str, conn: psycopg.Connection[Any], tmp_path: Any
) -> None:
    conn.execute("CREATE TABLE results (value int)")
    (tmp_path / "async_cli_jobs.py").write_text(CLI_JOBS)
    conveyor.enqueue_many(
        conn, [{"job_class": "AsyncRecords", "args": [n]} for n in range(50)]
    )
    conveyor.enqueue(conn, "AsyncBlocks")
    log = tmp_path / "worker.log"
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "conveyor",
                "worker",
                str(tmp_path / "async_cli_jobs.py"),
                "--database-url",
                db_url,
                "--worker-count",
                "2",
                "--async-concurrency",
                "5",
                "--async-block-threshold",
                "0.1",
            ],
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
        try:
            wait_for(lambda: count_jobs(conn) == 0, timeout=30, what="every job done")
            process.send_signal(signal.SIGTERM)
            assert process.wait(15) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(10)
    assert scalar(conn, "SELECT count(DISTINCT value) FROM results") == 50
    events = [json.loads(line)["event"] for line in log.read_text().splitlines()]
    assert "event_loop_blocked" in events and "event_loop_unblocked" in events
    assert "job_errored" not in events


class ReturnsACoroutine(conveyor.Job):
    """Not ``async def``, but returns an awaitable: it used to be dropped (the
    job destroyed, its body never run); it is awaited now."""

    def run(self, value: int) -> Any:
        return self.later(value)

    async def later(self, value: int) -> None:
        await asyncio.sleep(0)
        done.append(value)


def test_a_run_that_returns_a_coroutine_has_it_awaited(
    conn: psycopg.Connection[Any], start_worker: Callable[..., conveyor.Worker]
) -> None:
    conveyor.enqueue(conn, ReturnsACoroutine, 3)
    start_worker(worker_count=1)
    wait_for(lambda: done, what="the coroutine awaited")
    assert done == [3]
    wait_for(lambda: count_jobs(conn) == 0, what="the job destroyed")


def test_under_middleware_a_leaked_async_connection_is_still_the_jobs_error(
    conn: psycopg.Connection[Any], start_worker: Callable[..., conveyor.Worker]
) -> None:
    conveyor.enqueue(conn, AsyncLeaksConnection)
    start_worker(worker_count=1, job_middleware=[lambda job, proceed: proceed()])
    wait_for(lambda: count_jobs(conn, "error_count = 1"), what="the error recorded")
    message = scalar(conn, "SELECT last_error_message FROM conveyor.jobs")
    assert "kept 1 borrowed connection(s)" in message
