"""`async def run`: the coroutine a job's run returns is never dropped: the
worker awaits it on its event loop thread (test_asyncio.py covers that loop);
synchronous mode awaits it too, but not inside a running loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from db_support import scalar, wait_for

import conveyor

ran: list[tuple[Any, ...]] = []


class AsyncWorks(conveyor.Job):
    async def run(self, value: int, *, scale: int = 1) -> None:
        await asyncio.sleep(0.01)  # a real suspension point, on a real loop
        loop = asyncio.get_running_loop()
        ran.append((value * scale, threading.current_thread().name, id(loop)))


class AsyncFails(conveyor.Job):
    maximum_retry_count = 0

    async def run(self) -> None:
        await asyncio.sleep(0)
        raise ValueError("failed after an await")


class AsyncFinishes(conveyor.Job):
    async def run(self) -> None:
        await asyncio.sleep(0)
        self.finish()


@pytest.fixture
def worker(db_url: str) -> Iterator[conveyor.Worker]:
    ran.clear()
    before = set(threading.enumerate())
    process = conveyor.Worker(db_url, worker_count=2, poll_interval=0.2, wait_period=0.01)
    process.start()
    yield process
    assert process.stop(timeout=5)
    assert set(threading.enumerate()) - before == set()


def test_an_async_run_is_awaited_on_the_event_loop_thread(
    worker: conveyor.Worker, conn: psycopg.Connection[Any]
) -> None:
    AsyncWorks.enqueue(2, conn=conn)
    AsyncWorks.enqueue(3, conn=conn, kwargs={"scale": 10})
    wait_for(lambda: len(ran) == 2, what="both async jobs")
    assert sorted(value for value, _, _ in ran) == [2, 30]
    assert {thread for _, thread, _ in ran} == {"conveyor-asyncio"}
    wait_for(lambda: scalar(conn, "SELECT count(*) FROM conveyor.jobs") == 0, what="destroyed")


def test_an_async_runs_error_is_the_jobs_error(
    worker: conveyor.Worker, conn: psycopg.Connection[Any]
) -> None:
    job_id = AsyncFails.enqueue(conn=conn)
    AsyncFinishes.enqueue(conn=conn)
    wait_for(
        lambda: scalar(conn, "SELECT count(*) FROM conveyor.jobs WHERE expired_at IS NOT NULL"),
        what="the failing job expired",
    )
    message = scalar(conn, "SELECT last_error_message FROM conveyor.jobs WHERE id = %s", (job_id,))
    assert message == "ValueError: failed after an await"
    wait_for(
        lambda: scalar(conn, "SELECT count(*) FROM conveyor.jobs WHERE finished_at IS NOT NULL"),
        what="the async job that finishes itself",
    )


def test_synchronous_mode_awaits_too_but_not_inside_a_running_loop(
    conn: psycopg.Connection[Any],
) -> None:
    ran.clear()
    with conveyor.run_synchronously():
        assert AsyncWorks.enqueue(5, conn=conn) is None
    assert [value for value, _, _ in ran] == [5]

    async def from_async_code() -> None:
        with conveyor.run_synchronously():
            AsyncWorks.enqueue(6, conn=conn)

    # No "coroutine was never awaited" warning either: warnings are errors here.
    with pytest.raises(conveyor.ConveyorError, match="inside a running event loop"):
        asyncio.run(from_async_code())
    assert [value for value, _, _ in ran] == [5]
