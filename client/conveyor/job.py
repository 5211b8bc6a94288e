"""The :class:`Job` base class, its helper methods, and the job-class registry.

The class owns enqueueing (as Que's ``Job.enqueue`` does):
:func:`conveyor.enqueue` and :func:`conveyor.enqueue_many` are thin fronts
over :func:`enqueue_job` and :func:`enqueue_jobs` here.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import math
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from . import enqueueing, sql
from ._hooks import run_chain
from .errors import ConveyorError, UnknownJobClassError, describe, format_error
from .protocol import Action, LockedJob, Resolution

if TYPE_CHECKING:
    import psycopg

    from .schedules import Schedule

__all__ = ["Job", "resolve_job_class"]

_registry: dict[str, type[Job]] = {}
_registry_lock = threading.Lock()


class JobContext(Protocol):
    """What a running job gets from whoever runs it (a worker, or the
    synchronous mode): connections for its own transactions, and the SQL
    middleware its helper statements go through."""

    sql_middleware: Sequence[sql.SQLMiddleware]

    def connection(self) -> AbstractContextManager[psycopg.Connection[Any]]: ...

    def leftovers(self) -> int:
        """Close connections the current job still holds; return how many."""
        ...


def resolve_job_class(name: str) -> type[Job]:
    """The :class:`Job` subclass a ``job_class`` value names.

    A name registered by a subclass definition (its class name, or the
    ``job_class`` it sets) wins; otherwise a dotted path
    ``package.module.ClassName`` is imported on demand. Raises
    :class:`UnknownJobClassError` when neither works.
    """
    cls = _registry.get(name)
    if cls is not None:
        return cls
    module_name, _, attribute = name.rpartition(".")
    if not module_name:
        raise UnknownJobClassError(
            f"unknown job class {name!r}: no Job subclass of that name is loaded "
            "(pass its module to `conveyor worker`, or enqueue it by dotted path)"
        )
    try:
        module = importlib.import_module(module_name)
        found = getattr(module, attribute)
    except Exception as error:  # ImportError, AttributeError, or the module's own
        raise UnknownJobClassError(
            f"unknown job class {name!r}: cannot import it ({describe(error)})"
        ) from error
    if not (isinstance(found, type) and issubclass(found, Job)):
        raise UnknownJobClassError(f"unknown job class {name!r}: it is not a conveyor.Job")
    with _registry_lock:
        _registry[name] = found
    return found


def job_classes() -> list[type[Job]]:
    """The registered job classes, by ``job_class``."""
    with _registry_lock:
        return [_registry[name] for name in sorted(_registry)]


def _register(cls: type[Job]) -> None:
    """Register ``cls`` under its ``job_class``. Another class under the same
    name is an error: a worker would run whichever module was imported last.
    The same class defined again (same module and qualified name: a module
    reloaded, or a class defined in a function called twice) replaces it."""
    name = cls.job_class
    with _registry_lock:
        known = _registry.get(name)
        if known is not None and (known.__module__, known.__qualname__) != (
            cls.__module__,
            cls.__qualname__,
        ):
            raise ConveyorError(
                f"job_class {name!r} is already registered by "
                f"{known.__module__}.{known.__qualname__}; "
                f"{cls.__module__}.{cls.__qualname__} cannot take it too "
                "(set a distinct job_class on one of them)"
            )
        _registry[name] = cls


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
        _register(cls)

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

    def run(self, *args: Any, **kwargs: Any) -> None:
        """The job's work. Receives the job's ``args`` (and ``kwargs``)."""
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
        """Mark the job expired: kept in the table and never retried."""
        return self._resolve(Action.EXPIRE, sql.EXPIRE_JOB, conn)

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
        message: str | None = None
        backtrace: str | None = None
        if self._error is not None:
            message, backtrace = format_error(self._error)
        job_id = self.id
        if job_id is None or conn is None:
            self._resolution = Resolution(Action.RETRY, job_id, message, backtrace, seconds)
            return True
        rows = self._execute(conn, sql.RETRY_JOB, (job_id, message, backtrace, seconds))
        self._resolution = Resolution(Action.UNLOCK, job_id)
        return bool(rows)

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

    # --- enqueueing -----------------------------------------------------------

    @classmethod
    def enqueue(
        cls,
        *args: Any,
        conn: psycopg.Connection[Any],
        queue: str | None = None,
        priority: int | None = None,
        run_at: datetime | None = None,
        data: Mapping[str, Any] | None = None,
        maximum_retry_count: int | None = None,
        kwargs: Mapping[str, Any] | None = None,
        unique_key: str | None = None,
    ) -> int | None:
        """Enqueue this job class in ``conn``'s current transaction and return
        the new job's id (None when it ran synchronously). Options default to
        the class attributes, then to the SQL defaults. With a ``unique_key``
        (given, or the class's) that an unresolved job holds, nothing is
        inserted and that job's id is returned."""
        options = enqueueing.options(
            cls,
            queue=queue,
            priority=priority,
            run_at=run_at,
            data=data,
            maximum_retry_count=maximum_retry_count,
            kwargs=kwargs,
            unique_key=unique_key,
            args=args,
        )
        return enqueue_job(conn, cls, cls.job_class, args, options)

    @classmethod
    def enqueue_many(
        cls,
        args_list: Sequence[Sequence[Any]],
        *,
        conn: psycopg.Connection[Any],
        queue: str | None = None,
        priority: int | None = None,
        run_at: datetime | None = None,
        data: Mapping[str, Any] | None = None,
        maximum_retry_count: int | None = None,
    ) -> list[int]:
        """Enqueue one job of this class per entry of ``args_list`` in a single
        statement; returns the ids in order. The class's ``unique_key``
        applies to each entry; of entries with the same key the first is
        inserted and the others return its id."""
        options: dict[str, Any] = {
            "queue": queue,
            "priority": priority,
            "run_at": run_at,
            "data": data,
            "maximum_retry_count": maximum_retry_count,
        }
        given = {key: value for key, value in options.items() if value is not None}
        return enqueue_jobs(conn, [{"job_class": cls, "args": list(a), **given} for a in args_list])

    def _invoke(self, args: Sequence[Any], data: Mapping[str, Any]) -> None:
        """Run the job with its arguments (``data["kwargs"]`` as keyword
        arguments), then resolve it by default if :meth:`run` did not."""
        if data and "kwargs" in data:
            self.run(*args, **data["kwargs"])
        else:
            self.run(*args)
        if self._resolution is None:
            self.default_resolve_action()

    # --- internals ---------------------------------------------------------------

    def _default_retry_delay(self) -> float | None:
        interval = type(self).retry_interval
        if callable(interval):
            return float(interval(self._error_count))
        return interval

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

    def _execute(
        self, conn: psycopg.Connection[Any], statement: str, params: Sequence[Any]
    ) -> list[Any]:
        middleware = self._context.sql_middleware if self._context is not None else ()

        def proceed() -> list[Any]:
            return conn.execute(statement, params).fetchall()

        return run_chain(middleware, (statement, params), proceed)


# --- enqueueing -------------------------------------------------------------------


def job_class_and_name(job_class: str | type[Job]) -> tuple[type[Job] | None, str]:
    """(the class, if one is given, and the name to store)."""
    if isinstance(job_class, str):
        return None, job_class
    if isinstance(job_class, type) and issubclass(job_class, Job):
        return job_class, job_class.job_class
    raise TypeError(f"job_class must be a str or a Job subclass, not {job_class!r}")


def enqueue_job(
    conn: psycopg.Connection[Any],
    cls: type[Job] | None,
    name: str,
    args: Sequence[Any],
    options: dict[str, Any],
) -> int | None:
    """Insert one job (see :func:`conveyor.enqueue`), or run it now in
    synchronous mode and return None."""
    if enqueueing.synchronous(cls, options):
        _run_now(conn, cls, name, args, options)
        return None
    return enqueueing.insert_job(conn, name, args, options)


def enqueue_jobs(conn: psycopg.Connection[Any], jobs: Iterable[Mapping[str, Any]]) -> list[int]:
    """Insert many jobs in one statement (see :func:`conveyor.enqueue_many`)."""
    specs: list[dict[str, Any]] = []
    for index, job in enumerate(jobs):
        unknown = set(job) - enqueueing.JOB_KEYS
        if unknown:
            raise TypeError(f"enqueue_many: job {index} has unknown keys {sorted(unknown)}")
        if "job_class" not in job:
            raise TypeError(f"enqueue_many: job {index} has no job_class")
        cls, name = job_class_and_name(job["job_class"])
        options = enqueueing.options(
            cls,
            queue=job.get("queue"),
            priority=job.get("priority"),
            run_at=job.get("run_at"),
            data=job.get("data"),
            maximum_retry_count=job.get("maximum_retry_count"),
            kwargs=job.get("kwargs"),
            unique_key=job.get("unique_key"),
            args=list(job.get("args") or ()),
        )
        args = list(job.get("args") or ())
        if enqueueing.synchronous(cls, options):
            _run_now(conn, cls, name, args, options)
        else:
            specs.append(enqueueing.job_spec(name, args, options))
    return enqueueing.insert_jobs(conn, specs)


class _SyncContext:
    """A synchronous job's context: the enqueuing connection, in a savepoint."""

    sql_middleware: Sequence[sql.SQLMiddleware] = ()

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        with self._conn.transaction():
            yield self._conn

    def leftovers(self) -> int:
        return 0


def _run_now(
    conn: psycopg.Connection[Any],
    cls: type[Job] | None,
    name: str,
    args: Sequence[Any],
    options: Mapping[str, Any],
) -> None:
    job_cls = cls if cls is not None else resolve_job_class(name)
    loaded_args = json.loads(enqueueing.dumps(list(args), "args"))
    data = json.loads(enqueueing.dumps(dict(options.get("data") or {}), "data"))
    job_cls._from_row(None, _SyncContext(conn))._invoke(loaded_args, data)


# --- for error notifiers and Job.attrs ---------------------------------------------


def job_row_dict(row: LockedJob | None, error_count: int | None = None) -> dict[str, Any]:
    """A job row as the dict error notifiers and ``Job.attrs`` get."""
    if row is None:
        return {}
    result = row._asdict()
    for key in ("args", "data"):
        with contextlib.suppress(Exception):  # keep the text if it does not load
            result[key] = json.loads(str(result[key]))
    if error_count is not None:
        result["error_count"] = error_count
    return result
