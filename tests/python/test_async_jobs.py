"""`async def run` in synchronous mode: the coroutine a job's run returns is
awaited there too (the worker's event loop is tested in test_asyncio.py), but
not from inside a running event loop, where it is a clear error and the
coroutine is closed, not leaked."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

import conveyor

ran: list[int] = []


class SynchronousAsyncJob(conveyor.Job):
    async def run(self, value: int) -> None:
        await asyncio.sleep(0.01)  # a real suspension point, on a real loop
        ran.append(value)


def test_synchronous_mode_awaits_too_but_not_inside_a_running_loop(
    conn: psycopg.Connection[Any],
) -> None:
    ran.clear()
    with conveyor.run_synchronously():
        assert SynchronousAsyncJob.enqueue(5, conn=conn) is None
    assert ran == [5]

    async def from_async_code() -> None:
        with conveyor.run_synchronously():
            SynchronousAsyncJob.enqueue(6, conn=conn)

    # No "coroutine was never awaited" warning either: warnings are errors here.
    with pytest.raises(conveyor.ConveyorError, match="inside a running event loop"):
        asyncio.run(from_async_code())
    assert ran == [5]
