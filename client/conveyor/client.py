"""Enqueueing jobs from Python, and the synchronous mode for tests."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import psycopg

from . import sql
from .job import Job, resolve_job_class

__all__ = ["enqueue", "enqueue_many", "run_synchronously"]

_run_synchronously = False


@contextmanager
def run_synchronously(enabled: bool = True) -> Iterator[None]:
    """Within the block, enqueueing a job runs it at once in the calling
    thread instead of inserting it (Que's ``run_synchronously``), for tests::

        with conveyor.run_synchronously():
            SendWelcomeEmail.enqueue(42, conn=conn)   # runs now

    Jobs with a ``run_at`` are still inserted. Arguments go through a JSON
    round trip as they would through the database, the job gets the
    enqueuing connection from :meth:`Job.connection`, its resolution helpers
    do nothing (it has no row), and an error it raises propagates to the
    caller. The setting is process-wide; a ``Job`` subclass can also set
    ``run_synchronously = True``.
    """
    global _run_synchronously
    previous = _run_synchronously
    _run_synchronously = enabled
    try:
        yield
    finally:
        _run_synchronously = previous


def _options(
    cls: type[Job] | None,
    queue: str | None,
    priority: int | None,
    run_at: datetime | None,
    data: Mapping[str, Any] | None,
    maximum_retry_count: int | None,
    kwargs: Mapping[str, Any] | None,
) -> dict[str, Any]:
    if cls is not None:
        queue = cls.queue if queue is None else queue
        priority = cls.priority if priority is None else priority
        if maximum_retry_count is None:
            maximum_retry_count = cls.maximum_retry_count
    if kwargs:
        data = {**(data or {}), "kwargs": dict(kwargs)}
    options: dict[str, Any] = {}
    if queue is not None:
        options["queue"] = queue
    if priority is not None:
        options["priority"] = priority
    if run_at is not None:
        options["run_at"] = run_at
    if data is not None:
        options["data"] = data
    if maximum_retry_count is not None:
        options["maximum_retry_count"] = maximum_retry_count
    return options


def _class_and_name(job_class: str | type[Job]) -> tuple[type[Job] | None, str]:
    if isinstance(job_class, str):
        return None, job_class
    if isinstance(job_class, type) and issubclass(job_class, Job):
        return job_class, job_class.job_class
    raise TypeError(f"job_class must be a str or a Job subclass, not {job_class!r}")


#: json.dumps(value, separators=...) builds a new encoder on every call; one
#: shared encoder (stateless between calls, so thread-safe) does the same work.
_encode_json = json.JSONEncoder(separators=(",", ":")).encode


def _dumps(value: Any, what: str) -> str:
    try:
        return _encode_json(value)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{what} must be JSON-serializable: {error}") from None
    except RecursionError:
        raise TypeError(f"{what} must be JSON-serializable: nested too deeply") from None


def _synchronous(cls: type[Job] | None, options: Mapping[str, Any]) -> bool:
    if "run_at" in options:
        return False
    return _run_synchronously or (cls is not None and cls.run_synchronously)


class _SyncContext:
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
    args = json.loads(_dumps(list(args), "args"))
    data = json.loads(_dumps(dict(options.get("data") or {}), "data"))
    kwargs = data.get("kwargs") or {}
    job = job_cls._from_row(None, _SyncContext(conn))
    job.run(*args, **kwargs)
    if job._resolution is None:
        job.default_resolve_action()


def enqueue(
    conn: psycopg.Connection[Any],
    job_class: str | type[Job],
    *args: Any,
    queue: str | None = None,
    priority: int | None = None,
    run_at: datetime | None = None,
    data: Mapping[str, Any] | None = None,
    maximum_retry_count: int | None = None,
    kwargs: Mapping[str, Any] | None = None,
) -> int | None:
    """Enqueue one job in ``conn``'s current transaction; return its id.

    ``job_class`` is a :class:`Job` subclass (whose class attributes give the
    defaults) or any name a worker knows, such as a dotted path. ``args``
    must be JSON-serializable. ``kwargs`` are passed to ``run`` as keyword
    arguments (stored in ``data["kwargs"]``). Options left None take the SQL
    defaults (queue ``'default'``, priority 100, run_at now, data ``{}``,
    maximum_retry_count 15). Like any write, the job exists once the
    transaction commits, and never if it rolls back. Returns None when the job
    ran synchronously (see :func:`run_synchronously`).

    Errors: :class:`psycopg.errors.DataException` subclasses for rejected
    fields (see the protocol reference), :class:`TypeError` for arguments that
    are not JSON.
    """
    cls, name = _class_and_name(job_class)
    options = _options(cls, queue, priority, run_at, data, maximum_retry_count, kwargs)
    if _synchronous(cls, options):
        _run_now(conn, cls, name, args, options)
        return None
    if "data" in options:
        options["data"] = _dumps(dict(options["data"]), "data")
    statement = sql.enqueue(tuple(options))
    params = [name, _dumps(args, "args"), *options.values()]
    row = conn.execute(statement, params).fetchone()
    assert row is not None
    job_id: int = row[0]
    return job_id


def enqueue_many(conn: psycopg.Connection[Any], jobs: Iterable[Mapping[str, Any]]) -> list[int]:
    """Enqueue many jobs in one statement in ``conn``'s current transaction.

    Each job is a mapping with ``job_class`` (a name or a Job subclass) and
    optionally ``args``, ``kwargs``, ``queue``, ``priority``, ``run_at``,
    ``data`` and ``maximum_retry_count``. Returns the new ids in input order.
    Either every job is inserted or an error is raised. In synchronous mode,
    jobs without ``run_at`` run at once and only the others are inserted.
    """
    specs: list[dict[str, Any]] = []
    for index, job in enumerate(jobs):
        unknown = set(job) - {
            "job_class",
            "args",
            "kwargs",
            "queue",
            "priority",
            "run_at",
            "data",
            "maximum_retry_count",
        }
        if unknown:
            raise TypeError(f"enqueue_many: job {index} has unknown keys {sorted(unknown)}")
        if "job_class" not in job:
            raise TypeError(f"enqueue_many: job {index} has no job_class")
        cls, name = _class_and_name(job["job_class"])
        options = _options(
            cls,
            job.get("queue"),
            job.get("priority"),
            job.get("run_at"),
            job.get("data"),
            job.get("maximum_retry_count"),
            job.get("kwargs"),
        )
        args = list(job.get("args") or ())
        if _synchronous(cls, options):
            _run_now(conn, cls, name, args, options)
            continue
        if "run_at" in options:
            options["run_at"] = options["run_at"].isoformat()
        specs.append({"job_class": name, "args": args, **options})
    if not specs:
        return []
    payload = _dumps(specs, "jobs")
    rows = conn.execute(sql.ENQUEUE_MANY, (payload,)).fetchall()
    return [row[0] for row in rows]
