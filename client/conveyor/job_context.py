"""What a running job gets from whoever runs it: the :class:`JobContext`
protocol, and the two contexts of the synchronous mode (the enqueuing
connection, blocking or async, in a savepoint). A worker's context is
``worker._PoolContext``."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Iterator, Sequence
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    asynccontextmanager,
    contextmanager,
)
from typing import Any, Protocol

import psycopg

from . import sql
from .errors import ConveyorError

__all__ = ["AsyncSyncContext", "JobContext", "SyncContext"]


class JobContext(Protocol):
    """What a running job gets from whoever runs it (a worker, or the
    synchronous mode): connections for its own transactions, and the SQL
    middleware its helper statements go through."""

    sql_middleware: Sequence[sql.SQLMiddleware]

    def connection(self) -> AbstractContextManager[psycopg.Connection[Any]]: ...

    def aconnection(self) -> AbstractAsyncContextManager[psycopg.AsyncConnection[Any]]: ...

    def leftovers(self) -> int:
        """Close connections the current job still holds; return how many."""
        ...

    def run_coroutine(self, awaitable: Awaitable[Any]) -> Any:
        """Run ``awaitable`` to completion from a synchronous caller."""
        ...

    async def aleftovers(self) -> int:
        """Close async connections the current async job still holds."""
        ...


class SyncContext:
    """A synchronous job's context: the enqueuing connection, in a savepoint."""

    sql_middleware: Sequence[sql.SQLMiddleware] = ()

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        with self._conn.transaction():
            yield self._conn

    def aconnection(self) -> AbstractAsyncContextManager[psycopg.AsyncConnection[Any]]:
        raise ConveyorError(
            "a job run synchronously by conveyor.enqueue has no async connection "
            "(enqueue it with conveyor.aio.enqueue to give it one)"
        )

    def leftovers(self) -> int:
        return 0

    async def aleftovers(self) -> int:
        return 0

    def run_coroutine(self, awaitable: Awaitable[Any]) -> Any:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(_awaited(awaitable))
        if inspect.iscoroutine(awaitable):
            awaitable.close()  # not awaited here: closed, so not leaked either
        raise ConveyorError(
            "an async job cannot run synchronously inside a running event loop: "
            "enqueue it with conveyor.aio.enqueue"
        )


class AsyncSyncContext:
    """A synchronous job's context under :mod:`conveyor.aio`: the enqueuing
    async connection, in a savepoint."""

    sql_middleware: Sequence[sql.SQLMiddleware] = ()

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._conn = conn

    def connection(self) -> AbstractContextManager[psycopg.Connection[Any]]:
        raise ConveyorError(
            "a job run synchronously by conveyor.aio.enqueue has no blocking connection: "
            "use self.aconnection()"
        )

    @asynccontextmanager
    async def aconnection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        async with self._conn.transaction():
            yield self._conn

    def leftovers(self) -> int:
        return 0

    async def aleftovers(self) -> int:
        return 0

    def run_coroutine(self, awaitable: Awaitable[Any]) -> Any:
        raise ConveyorError("conveyor.aio runs a job with _ainvoke, never run_coroutine")


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable
