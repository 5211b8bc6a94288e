"""The :class:`Job` base class and its helper methods (the job-class registry is
:mod:`conveyor.registry`).

The class owns enqueueing (as Que's ``Job.enqueue`` does):
:func:`conveyor.enqueue` and :func:`conveyor.enqueue_many` are thin fronts
over :func:`enqueue_job` and :func:`enqueue_jobs` (in :mod:`conveyor.job_enqueue`).
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import (
    Callable,
    Mapping,
    Sequence,
)
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
)
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from . import enqueueing, sql
from ._hooks import run_chain
from .connections import (
    Connectable,
)
from .errors import ConveyorError, format_error
from .job_context import JobContext
from .job_enqueue import enqueue_job, enqueue_jobs
from .protocol import Action, LockedJob, Resolution, job_row_dict
from .registry import register, resolve_job_class

if TYPE_CHECKING:
    import psycopg

    from .schedules import Schedule

__all__ = ["Job", "resolve_job_class"]


class Job:
    """Base class of jobs. Subclass it and define :meth:`run`::

        class SendWelcomeEmail(conveyor.Job):
            queue = "mail"
            priority = 10

            def run(self, user_id: int) -> None:
                ...

    The class is known to workers by its ``job_class`` name: the class name
    unless the class sets ``job_class = "..."``. Class attributes set the
    defaults used by :meth:`enqueue` and by the worker's error handling.
    """

    #: The name stored in ``conveyor.jobs.job_class``. Defaults to the class name.
    job_class: ClassVar[str] = "Job"
    #: Default queue for :meth:`enqueue` (None: the SQL default, ``'default'``).
    queue: ClassVar[str | None] = None
    #: Default priority for :meth:`enqueue` (None: the SQL default, 100).
    priority: ClassVar[int | None] = None
    #: Seconds to wait before retrying after an error, or a callable taking the
    #: error count and returning seconds. None: the SQL backoff, count^4 + 3.
    retry_interval: ClassVar[float | Callable[[int], float] | None] = None
    #: Errors tolerated before the job is expired (None: the SQL default, 15).
    #: Stored in the job's row at enqueue time.
    maximum_retry_count: ClassVar[int | None] = None
    #: Run this class's jobs at once in the enqueuing thread (see
    #: :func:`conveyor.run_synchronously`).
    run_synchronously: ClassVar[bool] = False
    #: Default unique key for :meth:`enqueue` (None: no key). A string, or a
    #: function (a ``staticmethod`` or ``classmethod``) called with the job's
    #: arguments and keyword arguments that returns the key or None. While a
    #: job with the key is unresolved, enqueueing another returns its id and
    #: inserts nothing (see docs/how-to/unique-jobs.md).
    unique_key: ClassVar[str | Callable[..., str | None] | None] = None
    #: Default concurrency key for :meth:`enqueue` (None: no key), like
    #: GoodJob's ``key:``: a string, or a function called with the job's
    #: arguments and keyword arguments. The limits and throttle set for the key
    #: (``conveyor.set_concurrency_limit``) apply (see
    #: docs/how-to/concurrency-limits.md).
    concurrency_key: ClassVar[str | Callable[..., str | None] | None] = None
    #: Default labels for :meth:`enqueue` (None: none). A label can be paused
    #: and stats filtered by it (see docs/how-to/pausing.md).
    labels: ClassVar[Sequence[str] | None] = None
    #: Run this job on a schedule: a cron expression (``"0 3 * * *"``, UTC),
    #: or a :class:`conveyor.Schedule` for arguments, a time zone and the
    #: other options (its ``name`` and ``job_class`` default to this class's
    #: ``job_class``). ``conveyor worker`` declares it at start-up (see
    #: docs/how-to/recurring-jobs.md). Not inherited by subclasses.
    schedule: ClassVar[str | Schedule | None] = None

    _row: LockedJob | None
    _args: list[Any]
    _data: dict[str, Any]
    _context: JobContext | None
    _resolution: Resolution | None
    _error: BaseException | None
    _error_count: int

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "job_class" not in cls.__dict__:
            cls.job_class = cls.__name__
        register(cls)

    def __init__(self) -> None:
        self._bind(None, None, [], {})

    @classmethod
    def _from_row(
        cls,
        row: LockedJob | None,
        context: JobContext | None,
        args: list[Any] | None = None,
        data: dict[str, Any] | None = None,
    ) -> Job:
        """The job as a worker (or the synchronous mode) runs it; __init__ is
        not called, so a subclass's own __init__ needs no arguments for this."""
        job = cls.__new__(cls)
        job._bind(row, context, [] if args is None else args, {} if data is None else data)
        return job

    def _bind(
        self,
        row: LockedJob | None,
        context: JobContext | None,
        args: list[Any],
        data: dict[str, Any],
    ) -> None:
        self._row = row
        self._args = args
        self._data = data
        self._context = context
        self._resolution = None
        self._error = None
        self._error_count = row.error_count if row is not None else 0

    def run(self, *args: Any, **kwargs: Any) -> Any:
        """The job's work. Receives the job's ``args`` (and ``kwargs``).

        It may be ``async def run``: a worker runs it on its event loop (see
        the asyncio how-to), alongside the other async jobs of the process."""
        raise NotImplementedError(f"{type(self).__name__}.run is not defined")

    # --- the job's row ------------------------------------------------------

    @property
    def id(self) -> int | None:
        """The job's id (None for a job run synchronously: it has no row)."""
        return self._row.id if self._row is not None else None

    @property
    def error_count(self) -> int:
        """How many times this job has errored, counting the current error
        while :meth:`handle_error` runs."""
        return self._error_count

    @property
    def error(self) -> BaseException | None:
        """The error being handled, while :meth:`handle_error` runs."""
        return self._error

    @property
    def attrs(self) -> dict[str, Any]:
        """The job's row as a dict: id, priority, run_at, job_class, queue,
        args, data, error_count, maximum_retry_count."""
        result = job_row_dict(self._row, self._error_count)
        if result:
            result["args"], result["data"] = self._args, self._data
        return result

    # --- resolving the job (Que's job helper methods) -----------------------

    def destroy(self, *, conn: psycopg.Connection[Any] | None = None) -> bool:
        """Delete the job so it is not worked again.

        Without ``conn`` the worker deletes it after :meth:`run` returns (and
        this returns True). With ``conn`` it is deleted at once on that
        connection, in its current transaction -- write your results and
        destroy the job atomically -- and this returns whether it deleted the
        job: False means the job was already resolved by another run of it
        (after a lost lock), so roll your transaction back to keep its effects
        exactly once. :meth:`finish`, :meth:`expire` and :meth:`retry_in`
        return the same way.
        """
        return self._resolve(Action.DESTROY, sql.DESTROY_JOB, conn)

    def finish(self, *, conn: psycopg.Connection[Any] | None = None) -> bool:
        """Mark the job finished (the row is kept, with ``finished_at`` set)."""
        return self._resolve(Action.FINISH, sql.FINISH_JOB, conn)

    def expire(self, *, conn: psycopg.Connection[Any] | None = None) -> bool:
        """Mark the job expired: kept in the table and never retried.

        From :meth:`handle_error` it also records the error being handled,
        as a retry does and as Que's ``expire`` does: error_count goes up and
        last_error_message and last_error_backtrace say why the job expired.
        """
        if self._error is None:
            return self._resolve(Action.EXPIRE, sql.EXPIRE_JOB, conn)
        return self._record_error(None, conn, expire=True)

    def retry_in(
        self, seconds: float | None, *, conn: psycopg.Connection[Any] | None = None
    ) -> bool:
        """Run the job again in ``seconds`` (None: the SQL backoff).

        Counts as an error (error_count goes up, the current error if any is
        recorded), and expires the job past its ``maximum_retry_count``.
        """
        if seconds is not None:
            seconds = float(seconds)
            if not math.isfinite(seconds) or seconds < 0:
                raise ValueError(f"retry_in: seconds must be a number >= 0, not {seconds}")
        return self._record_error(seconds, conn, expire=False)

    def default_resolve_action(self) -> None:
        """Called when :meth:`run` returned without resolving the job:
        destroys it. Override to :meth:`finish` instead, for instance."""
        self.destroy()

    def handle_error(self, error: BaseException) -> bool:
        """Called when :meth:`run` raised ``error`` (any exception, including
        SystemExit and KeyboardInterrupt raised by the job).

        The default retries after ``retry_interval`` (the SQL backoff when it
        is None); the SQL expires the job past its maximum_retry_count. Return
        True to pass the error to the error notifier, False to keep it quiet.
        """
        return self.retry_in(self._default_retry_delay())

    def log_level(self, elapsed: float) -> int | None:
        """The logging level of this job's ``job_worked`` line, given the
        seconds it ran; None logs nothing. Default: DEBUG."""
        return logging.DEBUG

    def connection(self) -> AbstractContextManager[psycopg.Connection[Any]]:
        """A connection for the job's own transaction, as a context manager::

            with self.connection() as conn:
                conn.execute("UPDATE widgets SET price = %s WHERE id = %s", ...)
                self.destroy(conn=conn)

        In a worker it comes from the worker's pool and commits when the block
        ends (rolls back if it raises). In synchronous mode it is the enqueuing
        connection, in a savepoint.
        """
        if self._context is None:
            raise ConveyorError("this job is not running in a worker: it has no connection")
        return self._context.connection()

    def aconnection(self) -> AbstractAsyncContextManager[psycopg.AsyncConnection[Any]]:
        """The async twin of :meth:`connection`, for ``async def run``::

            async with self.aconnection() as conn:
                await conn.execute("UPDATE widgets SET price = %s WHERE id = %s", ...)
                await self.adestroy(conn=conn)

        In a worker it comes from the worker's
        :class:`psycopg_pool.AsyncConnectionPool` (opened with the first
        async job that asks) and commits when the block ends. Under
        :func:`conveyor.aio.enqueue`'s synchronous mode it is the enqueuing
        connection, in a savepoint.
        """
        if self._context is None:
            raise ConveyorError("this job is not running in a worker: it has no connection")
        return self._context.aconnection()

    # The async twins of the helpers that take a connection: with an
    # AsyncConnection they resolve the job in its transaction; without one they
    # are the same as the plain helpers.

    async def adestroy(self, *, conn: psycopg.AsyncConnection[Any] | None = None) -> bool:
        """:meth:`destroy` on an async connection."""
        return await self._aresolve(Action.DESTROY, sql.DESTROY_JOB, conn)

    async def afinish(self, *, conn: psycopg.AsyncConnection[Any] | None = None) -> bool:
        """:meth:`finish` on an async connection."""
        return await self._aresolve(Action.FINISH, sql.FINISH_JOB, conn)

    async def aexpire(self, *, conn: psycopg.AsyncConnection[Any] | None = None) -> bool:
        """:meth:`expire` on an async connection."""
        return await self._aresolve(Action.EXPIRE, sql.EXPIRE_JOB, conn)

    async def aretry_in(
        self, seconds: float | None, *, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> bool:
        """:meth:`retry_in` on an async connection."""
        if conn is None or self.id is None:
            return self.retry_in(seconds)
        self.retry_in(seconds)  # validates and records; then the statement
        assert self._resolution is not None
        done = self._resolution
        cursor = await conn.execute(
            sql.RETRY_JOB, (done.job_id, done.message, done.backtrace, done.delay)
        )
        rows = await cursor.fetchall()
        self._resolution = Resolution(Action.UNLOCK, done.job_id)
        return bool(rows)

    # --- enqueueing -----------------------------------------------------------

    @classmethod
    def enqueue(
        cls,
        *args: Any,
        conn: Connectable,
        queue: str | None = None,
        priority: int | None = None,
        run_at: datetime | None = None,
        data: Mapping[str, Any] | None = None,
        maximum_retry_count: int | None = None,
        kwargs: Mapping[str, Any] | None = None,
        unique_key: str | None = None,
        concurrency_key: str | None = None,
        labels: Sequence[str] | None = None,
        batch_id: int | None = None,
    ) -> int | None:
        """Enqueue this job class in ``conn``'s current transaction and return
        the new job's id (None when it ran synchronously). Options default to
        the class attributes, then to the SQL defaults. ``conn`` is a
        psycopg connection or a SQLAlchemy Session or Connection (see
        :func:`conveyor.enqueue`); :func:`conveyor.aio.enqueue` takes the
        async ones.
        With a ``unique_key``
        (given, or the class's) that an unresolved job holds, nothing is
        inserted and that job's id is returned. ``concurrency_key`` and
        ``labels`` default to the class's; with a key whose enqueue limit is
        reached, nothing is inserted and None is returned."""
        options = enqueueing.options(
            cls,
            queue=queue,
            priority=priority,
            run_at=run_at,
            data=data,
            maximum_retry_count=maximum_retry_count,
            kwargs=kwargs,
            unique_key=unique_key,
            concurrency_key=concurrency_key,
            labels=labels,
            batch_id=batch_id,
            args=args,
        )
        return enqueue_job(conn, cls, cls.job_class, args, options)

    @classmethod
    def enqueue_many(
        cls,
        args_list: Sequence[Sequence[Any]],
        *,
        conn: Connectable,
        queue: str | None = None,
        priority: int | None = None,
        run_at: datetime | None = None,
        data: Mapping[str, Any] | None = None,
        maximum_retry_count: int | None = None,
        labels: Sequence[str] | None = None,
        batch_id: int | None = None,
    ) -> list[int]:
        """Enqueue one job of this class per entry of ``args_list`` in a single
        statement; returns the ids in order. The class's ``unique_key``
        and ``concurrency_key`` apply to each entry; of entries with the same
        unique key the first is inserted and the others return its id."""
        options: dict[str, Any] = {
            "queue": queue,
            "priority": priority,
            "run_at": run_at,
            "data": data,
            "maximum_retry_count": maximum_retry_count,
            "labels": labels,
            "batch_id": batch_id,
        }
        given = {key: value for key, value in options.items() if value is not None}
        return enqueue_jobs(conn, [{"job_class": cls, "args": list(a), **given} for a in args_list])

    # --- running the job: the one place that calls run() ----------------------

    @classmethod
    def _is_async(cls) -> bool:
        """Whether ``run`` is ``async def`` (a worker runs it on its loop)."""
        return inspect.iscoroutinefunction(cls.run)

    def _call_run(self, args: Sequence[Any], data: Mapping[str, Any]) -> Any:
        if data and "kwargs" in data:
            return self.run(*args, **data["kwargs"])
        return self.run(*args)

    def _invoke(self, args: Sequence[Any], data: Mapping[str, Any]) -> Any:
        """Run the job with its arguments (``data["kwargs"]`` as keyword
        arguments), then resolve it by default if :meth:`run` did not; returns
        what run returned. A run that returns an awaitable (``async def
        run``) is awaited through the context: on the worker's loop, or with
        ``asyncio.run`` in synchronous mode."""
        result = self._call_run(args, data)
        if inspect.isawaitable(result):
            if self._context is None:
                raise ConveyorError("an async job needs a context to run its coroutine")
            result = self._context.run_coroutine(result)
        if self._resolution is None:
            self.default_resolve_action()
        return result

    async def _ainvoke(self, args: Sequence[Any], data: Mapping[str, Any]) -> Any:
        """:meth:`_invoke` on an event loop: a coroutine is awaited here."""
        result = self._call_run(args, data)
        if inspect.isawaitable(result):
            result = await result
        if self._resolution is None:
            self.default_resolve_action()
        return result

    # --- internals ---------------------------------------------------------------

    def _default_retry_delay(self) -> float | None:
        interval = type(self).retry_interval
        if callable(interval):
            return float(interval(self._error_count))
        return interval

    def _record_error(
        self, seconds: float | None, conn: psycopg.Connection[Any] | None, *, expire: bool
    ) -> bool:
        """retry_job: count the error (the current one, if any, recorded),
        then retry in ``seconds`` or, with ``expire``, expire the job."""
        message: str | None = None
        backtrace: str | None = None
        if self._error is not None:
            message, backtrace = format_error(self._error)
        job_id = self.id
        if job_id is None or conn is None:
            self._resolution = Resolution(Action.RETRY, job_id, message, backtrace, seconds, expire)
            return True
        rows = self._execute(conn, sql.RETRY_JOB, (job_id, message, backtrace, seconds, expire))
        self._resolution = Resolution(Action.UNLOCK, job_id)
        return bool(rows)

    def _resolve(
        self, action: Action, statement: str, conn: psycopg.Connection[Any] | None
    ) -> bool:
        job_id = self.id
        if job_id is None or conn is None:
            self._resolution = Resolution(action, job_id)
            return True
        rows = self._execute(conn, statement, (job_id,))
        self._resolution = Resolution(Action.UNLOCK, job_id)
        return bool(rows and rows[0][0])

    async def _aresolve(
        self, action: Action, statement: str, conn: psycopg.AsyncConnection[Any] | None
    ) -> bool:
        job_id = self.id
        if job_id is None or conn is None:
            self._resolution = Resolution(action, job_id)
            return True
        cursor = await conn.execute(statement, (job_id,))
        rows = await cursor.fetchall()
        self._resolution = Resolution(Action.UNLOCK, job_id)
        return bool(rows and rows[0][0])

    def _execute(
        self, conn: psycopg.Connection[Any], statement: str, params: Sequence[Any]
    ) -> list[Any]:
        middleware = self._context.sql_middleware if self._context is not None else ()

        def proceed() -> list[Any]:
            return conn.execute(statement, params).fetchall()

        return run_chain(middleware, (statement, params), proceed)
