"""The :class:`Worker` (``conveyor.Worker``, the process behind ``conveyor
worker``): a locker thread, a buffer and a pool of worker threads."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from types import TracebackType
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from . import cleanup, index_upkeep, schedules, sql
from ._hooks import ErrorNotifier, JobMiddleware, hooks
from .buffer import JobBuffer
from .buffer_sizing import FLOOR_MAXIMUM, FLOOR_MINIMUM, AdaptiveSize
from .errors import ConveyorError, leaked_connections_error
from .event_loop import EventLoopThread
from .locker import Locker
from .logs import log
from .metrics import WorkerMetrics
from .periodic import Periodic
from .poolers import configure_pooled_connection
from .waker import Waker
from .worker_threads import WorkerThreads
from .worker_threads import worker_priorities as _resolve_priorities

__all__ = ["Worker"]

#: How long after the shutdown deadline ``stop()`` waits for the locker
#: thread: past the deadline it still sends its last statements (the final
#: resolutions and unregister_locker), which a slow or hung server can delay.
#: The locker is a daemon thread: a process that exits does not wait for it.
_LOCKER_FINAL_STATEMENTS_TIMEOUT = 30.0


def _reset_connection(conn: psycopg.Connection[Any]) -> None:
    """Give the next job a clean session: whatever a job set (autocommit, SET,
    cursors, temporary tables, LISTEN, advisory locks) is undone.
    A broken connection fails here and the pool discards it."""
    conn.autocommit = True
    conn.execute(sql.RESET_SESSION, prepare=False)
    conn.autocommit = False
    conn.isolation_level = None
    conn.read_only = None
    conn.deferrable = None


async def _areset_connection(conn: psycopg.AsyncConnection[Any]) -> None:
    """:func:`_reset_connection` for the async pool."""
    await conn.set_autocommit(True)
    await conn.execute(sql.RESET_SESSION, prepare=False)
    await conn.set_autocommit(False)
    await conn.set_isolation_level(None)
    await conn.set_read_only(None)
    await conn.set_deferrable(None)


async def _aconfigure_pooled_connection(conn: psycopg.AsyncConnection[Any]) -> None:
    """The async pool's :func:`configure_pooled_connection`."""
    row = await (await conn.execute("SELECT pg_backend_pid()", prepare=False)).fetchone()
    await conn.commit()
    if row is None or row[0] != conn.info.backend_pid:
        conn.prepare_threshold = None


#: The async connections the current async job holds (one list per job's task).
_aborrowed: contextvars.ContextVar[list[psycopg.AsyncConnection[Any]]] = contextvars.ContextVar(
    "conveyor_aborrowed"
)


class _PoolContext:
    """What running jobs get from the worker: pooled connections (the pool is
    opened on first use) and the SQL middleware.

    A job must give back what it borrows, in a usable state: a block that ends
    with the connection closed or its transaction aborted raises (nothing was
    committed), and connections still borrowed when ``run`` returns are
    closed and reported (:meth:`leftovers`)."""

    def __init__(
        self,
        url: str,
        size: int,
        pool: ConnectionPool | None,
        sql_middleware: Sequence[sql.SQLMiddleware],
        loop: EventLoopThread,
        async_pool_size: int,
    ) -> None:
        self._url = url
        self._size = size
        self._pool = pool
        self._own_pool: ConnectionPool | None = None
        self._lock = threading.Lock()
        self._local = threading.local()
        self.sql_middleware: Sequence[sql.SQLMiddleware] = tuple(sql_middleware)
        self.loop = loop
        self._async_pool_size = async_pool_size
        #: Jobs that return are finished (kept), not destroyed (Job.preserve).
        self.preserve_finished = False
        # Both touched only on the loop's thread.
        self._apool: AsyncConnectionPool | None = None
        self._apool_opened: Any = None  # an asyncio.Future, made on the loop
        loop.on_close.append(self._aclose)

    def _get_pool(self) -> ConnectionPool:
        if self._pool is not None:
            return self._pool
        with self._lock:
            if self._own_pool is None:
                self._own_pool = ConnectionPool(
                    self._url,
                    min_size=0,
                    max_size=self._size,
                    open=True,
                    name="conveyor-jobs",
                    configure=configure_pooled_connection,
                    reset=_reset_connection,
                )
            return self._own_pool

    def _borrowed(self) -> list[psycopg.Connection[Any]]:
        borrowed: list[psycopg.Connection[Any]] | None = getattr(self._local, "borrowed", None)
        if borrowed is None:
            borrowed = self._local.borrowed = []
        return borrowed

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        pool = self._get_pool()
        borrowed = self._borrowed()
        with pool.connection() as conn:
            borrowed.append(conn)
            try:
                yield conn
                if conn.closed:
                    raise ConveyorError(
                        "the job closed its connection inside the block: nothing was committed"
                    )
                if conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
                    raise ConveyorError(
                        "the job's transaction was aborted by an error it caught: "
                        "nothing was committed"
                    )
            finally:
                if conn in borrowed:
                    borrowed.remove(conn)

    def leftovers(self) -> int:
        """Close the connections the current job still holds; how many."""
        borrowed = getattr(self._local, "borrowed", None)
        if not borrowed:
            return 0
        count = len(borrowed)
        pool = self._get_pool()
        for conn in borrowed:
            with contextlib.suppress(Exception):
                conn.close()
            with contextlib.suppress(Exception):
                pool.putconn(conn)
        borrowed.clear()
        return count

    # --- async jobs (on the worker's event loop) -------------------------------------

    def run_coroutine(self, awaitable: Awaitable[Any]) -> Any:
        """An async job run from its worker thread (inside job middleware):
        on the loop, with the leftovers rule of :meth:`aleftovers`."""

        async def guarded() -> Any:
            _aborrowed.set([])
            try:
                result = await awaitable
            finally:
                leaked = await self.aleftovers()
            if leaked:
                raise leaked_connections_error(leaked)
            return result

        return self.loop.run(guarded())

    async def _get_apool(self) -> AsyncConnectionPool:
        if self._apool_opened is None:  # the first caller opens it; the others wait
            self._apool_opened = asyncio.get_running_loop().create_future()
            pool = AsyncConnectionPool(
                self._url,
                min_size=0,
                max_size=self._async_pool_size,
                open=False,
                name="conveyor-async-jobs",
                configure=_aconfigure_pooled_connection,
                reset=_areset_connection,
            )
            try:
                await pool.open()
            except BaseException as error:
                self._apool_opened.set_exception(error)
                self._apool_opened = None
                raise
            self._apool = pool
            self._apool_opened.set_result(pool)
            return pool
        opened: AsyncConnectionPool = await asyncio.shield(self._apool_opened)
        return opened

    @asynccontextmanager
    async def aconnection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        pool = await self._get_apool()
        borrowed = _aborrowed.get(None)
        if borrowed is None:
            borrowed = []
            _aborrowed.set(borrowed)
        async with pool.connection() as conn:
            borrowed.append(conn)
            try:
                yield conn
                if conn.closed:
                    raise ConveyorError(
                        "the job closed its connection inside the block: nothing was committed"
                    )
                if conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
                    raise ConveyorError(
                        "the job's transaction was aborted by an error it caught: "
                        "nothing was committed"
                    )
            finally:
                if conn in borrowed:
                    borrowed.remove(conn)

    async def aleftovers(self) -> int:
        """Close the async connections the current async job still holds."""
        borrowed = _aborrowed.get(None)
        if not borrowed or self._apool is None:
            return 0
        count = len(borrowed)
        for conn in borrowed:
            with contextlib.suppress(Exception):
                await conn.close()
            with contextlib.suppress(Exception):
                await self._apool.putconn(conn)
        borrowed.clear()
        return count

    async def _aclose(self) -> None:
        pool, self._apool = self._apool, None
        if pool is not None:
            await pool.close(timeout=1.0)

    def close(self, timeout: float) -> bool:
        """Close the event loop and the pools; False if async jobs were still
        running (they are cancelled)."""
        clean = self.loop.close(timeout)
        with self._lock:
            pool, self._own_pool = self._own_pool, None
        if pool is not None:
            pool.close(timeout=timeout)
        return clean


class Worker:
    """A worker process's machinery, usable from Python::

        worker = conveyor.Worker(database_url, queues=["default", "mail"])
        worker.start()
        ...
        worker.stop()

    ``start()`` starts the locker thread (``conveyor-locker``) and the worker
    threads (``conveyor-worker-N``) and returns once the locker has made its
    first connection attempt: it raises :class:`ConveyorError` if the schema
    is missing or the attempt failed for a reason retrying cannot fix (bad
    credentials, an unknown role or database, no CONNECT privilege, an invalid
    URL), and keeps retrying in the background while the database is
    unreachable. ``stop()`` shuts down as Que does: no more locking, buffered
    jobs unlocked at once, running jobs given up to ``shutdown_timeout``
    seconds, then the locker's session is closed so PostgreSQL releases what
    is still locked.

    Options mirror the CLI's: ``connection_url`` (the locker's own session;
    defaults to ``database_url``, which job code's pool uses),
    ``queues``, ``worker_priorities`` (None for "any") and ``worker_count``
    (Que's trim/pad rule), ``poll_interval`` (seconds), ``wait_period``
    (seconds), ``minimum_buffer_size``, ``maximum_buffer_size`` (both None,
    the default: the adaptive buffer of :mod:`conveyor.buffer_sizing`; either
    given: fixed bounds, the other defaulting to Que's 2 or 8),
    ``shutdown_timeout`` (seconds), ``log_internals``.
    ``durable_resolutions``: by default the locker's session commits with
    ``synchronous_commit = off``, so sending a batch of resolutions does not
    wait for a WAL flush; a server crash can then forget the last
    resolutions, and those jobs run again (conveyor is at-least-once anyway).
    Set it to make them durable at commit. Jobs that resolve themselves on
    their own connection are not affected either way. ``error_notifier``,
    ``job_middleware`` and ``sql_middleware`` default to
    :data:`conveyor.hooks`. ``pool`` lends job code your own
    :class:`psycopg_pool.ConnectionPool` instead of one the worker opens.

    ``async def run`` jobs run on one event loop per worker process (a
    thread of its own, started with the first async job): a worker thread
    hands the job over and takes the next, so up to ``async_concurrency``
    async jobs run at once however many worker threads there are. Their
    :meth:`~conveyor.Job.aconnection` comes from an
    :class:`psycopg_pool.AsyncConnectionPool` as large as the blocking pool.
    A job that blocks the loop for longer than ``async_block_threshold``
    seconds is logged (``event_loop_blocked``; None turns the watchdog off).

    History (docs/how-to/history-and-cleanup.md): ``preserve_finished`` keeps
    every job that returns (finish, with ``run``'s value as its result)
    instead of destroying it, as ``Job.preserve`` does per class. Every
    ``cleanup_interval`` seconds (None or 0: never) one worker of the
    database at a time deletes kept jobs finished -- and, with
    ``cleanup_expired``, expired -- more than ``preserve_for`` seconds ago.
    Every ``reindex_interval`` seconds (None or 0: never) one worker rebuilds
    the indexes a drained burst left bloated (``conveyor.index_bloat``,
    docs/operations.md "Index bloat"), when its role owns them.
    ``metrics``: count jobs worked, errored and expired, their durations and
    start delays, and the locker's round trips, in :attr:`metrics` (served
    as ``/metrics`` by :class:`conveyor.probes.ProbeServer`).
    """

    def __init__(
        self,
        database_url: str,
        *,
        connection_url: str | None = None,
        queues: Sequence[str] = ("default",),
        worker_priorities: Sequence[int | None] | None = None,
        worker_count: int | None = None,
        poll_interval: float = 5.0,
        wait_period: float = 0.05,
        minimum_buffer_size: int | None = None,
        maximum_buffer_size: int | None = None,
        shutdown_timeout: float = 10.0,
        error_notifier: ErrorNotifier | None = None,
        job_middleware: Sequence[JobMiddleware] | None = None,
        sql_middleware: Sequence[sql.SQLMiddleware] | None = None,
        log_internals: bool = False,
        durable_resolutions: bool = False,
        pool: ConnectionPool | None = None,
        async_concurrency: int = 100,
        async_block_threshold: float | None = 0.25,
        preserve_finished: bool = False,
        cleanup_interval: float | None = cleanup.DEFAULT_INTERVAL,
        preserve_for: float = cleanup.DEFAULT_PRESERVE_FOR,
        cleanup_expired: bool = True,
        reindex_interval: float | None = index_upkeep.DEFAULT_INTERVAL,
        metrics: bool = False,
    ) -> None:
        if isinstance(queues, str):
            queues = [queues]
        if not queues:
            raise ValueError("a worker needs at least one queue")
        if poll_interval <= 0:
            raise ValueError("poll_interval must be positive")
        if wait_period <= 0:
            raise ValueError("wait_period must be positive")
        if shutdown_timeout < 0:
            raise ValueError("shutdown_timeout must not be negative")
        if cleanup_interval is not None and cleanup_interval < 0:
            raise ValueError("cleanup_interval must not be negative")
        if reindex_interval is not None and reindex_interval < 0:
            raise ValueError("reindex_interval must not be negative")
        if preserve_for < 0:
            raise ValueError("preserve_for must not be negative")
        self.database_url = database_url
        self.connection_url = connection_url or database_url
        self.queues = list(dict.fromkeys(queues))
        self.worker_priorities = _resolve_priorities(worker_priorities, worker_count)
        self.poll_interval = poll_interval
        self.wait_period = wait_period
        #: Whether the buffer's bounds adapt (no size given).
        self.adaptive_buffer = minimum_buffer_size is None and maximum_buffer_size is None
        if maximum_buffer_size is None:
            maximum_buffer_size = max(FLOOR_MAXIMUM, minimum_buffer_size or 0)
        if minimum_buffer_size is None:
            minimum_buffer_size = min(FLOOR_MINIMUM, maximum_buffer_size)
        self.minimum_buffer_size = minimum_buffer_size
        self.maximum_buffer_size = maximum_buffer_size
        self.shutdown_timeout = shutdown_timeout
        self.log_internals = log_internals
        self.durable_resolutions = durable_resolutions
        self._error_notifier = error_notifier
        self._job_middleware = job_middleware
        self._sql_middleware = sql_middleware
        self._user_pool = pool
        self.async_concurrency = async_concurrency
        self.async_block_threshold = async_block_threshold
        self.preserve_finished = preserve_finished
        self._cleaner = (
            cleanup.Cleaner(
                self.connection_url,
                interval=cleanup_interval,
                preserve_for=preserve_for,
                cleanup_expired=cleanup_expired,
            )
            if cleanup_interval
            else None
        )
        self._index_upkeep = (
            index_upkeep.IndexUpkeep(self.connection_url, interval=reindex_interval)
            if reindex_interval
            else None
        )
        self._event_loop = EventLoopThread(
            concurrency=async_concurrency, block_threshold=async_block_threshold
        )
        self._waker = Waker()
        self.buffer = JobBuffer(
            minimum_size=minimum_buffer_size,
            maximum_size=maximum_buffer_size,
            ceilings=self.worker_priorities,
            wake=self._waker.wake,
        )
        #: The process's job and locker counters (None unless ``metrics``).
        self.metrics: WorkerMetrics | None = WorkerMetrics() if metrics else None
        self._locker: Locker | None = None
        self._threads: WorkerThreads | None = None
        self._context: _PoolContext | None = None
        self._started = False
        self._stopped = threading.Event()

    # --- lifecycle ----------------------------------------------------------------

    def start(self) -> None:
        """Start the locker and the worker threads (see the class docs)."""
        if self._started:
            raise ConveyorError("this worker was already started")
        self._started = True
        sql_middleware = (
            list(self._sql_middleware)
            if self._sql_middleware is not None
            else list(hooks.sql_middleware)
        )
        job_middleware = (
            list(self._job_middleware)
            if self._job_middleware is not None
            else list(hooks.job_middleware)
        )
        notifier = self._error_notifier or hooks.error_notifier
        self._context = _PoolContext(
            self.database_url,
            len(self.worker_priorities),
            self._user_pool,
            sql_middleware,
            self._event_loop,
            len(self.worker_priorities),
        )
        self._context.preserve_finished = self.preserve_finished
        self._locker = Locker(
            buffer=self.buffer,
            waker=self._waker,
            connection_url=self.connection_url,
            queues=self.queues,
            priorities=self.worker_priorities,
            poll_interval=self.poll_interval,
            wait_period=self.wait_period,
            sql_middleware=sql_middleware,
            log_internals=self.log_internals,
            durable_resolutions=self.durable_resolutions,
            adaptive=(AdaptiveSize(len(self.worker_priorities)) if self.adaptive_buffer else None),
        )
        self._threads = WorkerThreads(
            self.buffer,
            self.worker_priorities,
            context=self._context,
            event_loop=self._event_loop,
            error_notifier=notifier,
            job_middleware=job_middleware,
            metrics=self.metrics,
        )
        if self.metrics is not None:
            self._locker.on_round_trip = self.metrics.round_trip
        log(
            logging.INFO,
            "worker_started",
            queues=self.queues,
            worker_priorities=self.worker_priorities,
            poll_interval=self.poll_interval,
            wait_period=self.wait_period,
            minimum_buffer_size=self.minimum_buffer_size,
            maximum_buffer_size=self.maximum_buffer_size,
            adaptive_buffer=self.adaptive_buffer,
        )
        schedules.apply_declared_schedules(self.connection_url)
        self._threads.start()
        self._locker.start()
        self._locker.ready.wait()
        if self._locker.fatal is not None:
            fatal = self._locker.fatal
            self.stop(timeout=1.0)
            if isinstance(fatal, ConveyorError):
                raise fatal
            raise ConveyorError(str(fatal)) from fatal
        for upkeep in self._upkeep():
            upkeep.start()

    def _upkeep(self) -> list[Periodic]:
        return [u for u in (self._cleaner, self._index_upkeep) if u is not None]

    def stop(self, timeout: float | None = None) -> bool:
        """Stop and wait up to ``timeout`` seconds (default
        ``shutdown_timeout``) for running jobs. Returns True when every thread
        has ended, False when a job was still running at the deadline (its
        lock is released anyway, so it will run again elsewhere)."""
        if self._locker is None or self._threads is None:
            return True
        if timeout is None:
            timeout = self.shutdown_timeout
        deadline = time.monotonic() + timeout
        for upkeep in self._upkeep():  # a batch or a rebuild in flight ends with its statement
            upkeep.stop(timeout=0)
        self._locker.stop(deadline)
        self._locker.thread.join(timeout + _LOCKER_FINAL_STATEMENTS_TIMEOUT)
        # Idle worker threads exit as soon as the locker has stopped the buffer:
        # give them a moment even when the deadline has passed.
        done = self._threads.join(max(deadline, time.monotonic() + 0.5))
        done = done and not self._locker.thread.is_alive()
        for upkeep in self._upkeep():
            upkeep.stop(timeout=max(0.5, deadline - time.monotonic()))
        if self._context is not None:
            closed = self._context.close(timeout=max(1.0, deadline - time.monotonic()))
            done = closed and done
        if not self._stopped.is_set():
            self._waker.close()
            self._stopped.set()
            log(logging.INFO, "worker_stopped", clean=done)
        return done

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the locker thread ends (after :meth:`stop`, or if it
        failed fatally); True if it has."""
        if self._locker is None:
            return True
        self._locker.thread.join(timeout)
        return not self._locker.thread.is_alive()

    def __enter__(self) -> Worker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- state ------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether the locker is connected, registered and LISTENing (False
        while it reconnects, and once it has stopped)."""
        locker = self._locker
        return locker is not None and locker.connected and locker.thread.is_alive()

    @property
    def started(self) -> bool:
        """Whether the worker has started and not stopped: its locker has
        connected (it may be reconnecting now) and its threads all run."""
        locker = self._locker
        return (
            locker is not None
            and (locker.connected or locker.reconnects > 0)
            and not self._stopped.is_set()
            and all(thread.is_alive() for thread in self.threads)
        )

    @property
    def reconnects(self) -> int:
        """How many times the locker lost its session and started a new one."""
        return self._locker.reconnects if self._locker is not None else 0

    @property
    def fatal_error(self) -> BaseException | None:
        """The error that stopped the locker, if any."""
        return self._locker.fatal if self._locker is not None else None

    @property
    def threads(self) -> list[threading.Thread]:
        """The locker and worker threads (and the event loop's, once started)."""
        threads = [] if self._locker is None else [self._locker.thread]
        if self._threads is not None:
            threads += self._threads.threads
        return threads + self._event_loop.threads
